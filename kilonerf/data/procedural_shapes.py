"""Solids with exact ray intersections, and the surface patterns that colour them.

Used by :mod:`kilonerf.data.procedural`. Every shape lives in its own local frame (a centre
and a rotation whose columns are the local axes in world coordinates), so rotated boxes and
tilted cylinders reuse the axis-aligned formulas. All arrays are NumPy float64.
"""

from __future__ import annotations

import numpy as np

_TINY = 1e-15


def rotation(yaw_deg: float = 0.0, tilt_deg: float = 0.0) -> np.ndarray:
    """(3, 3) rotation: tilt about the local y axis, then yaw about world z."""
    a, b = np.radians(yaw_deg), np.radians(tilt_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
    return rz @ ry


class Shape:
    """A closed solid in a local frame: ``world = centre + rot @ local``."""

    def __init__(self, centre: tuple[float, float, float], rot: np.ndarray | None = None) -> None:
        self.centre = np.asarray(centre, dtype=np.float64)
        self.rot = np.eye(3) if rot is None else np.asarray(rot, dtype=np.float64)

    bounding_radius: float = 0.0
    """Radius of a sphere about ``centre`` that holds the shape (for cheap ray culling)."""

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) local coordinates."""
        return (points - self.centre) @ self.rot

    def intersect(self, origins: np.ndarray, dirs: np.ndarray, t_min: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
        """Nearest surface crossing with ``t > t_min`` along (N, 3) rays.

        Returns t (N,) (``inf`` on a miss) and outward unit normals (N, 3) in world axes.
        """
        t, n_local = self._hit_local(self.to_local(origins), dirs @ self.rot, t_min)
        return t, n_local @ self.rot.T

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(N,) bool: the (N, 3) world points are inside or on the solid."""
        return self._inside_local(self.to_local(points))

    def bounds(self) -> np.ndarray:
        """(2, 3) tight axis-aligned world box: min xyz, max xyz."""
        ext = self._extent()
        return np.stack([self.centre - ext, self.centre + ext])

    def _hit_local(self, o: np.ndarray, d: np.ndarray, t_min: float) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _extent(self) -> np.ndarray:
        raise NotImplementedError


class Sphere(Shape):
    def __init__(self, centre: tuple[float, float, float], radius: float) -> None:
        super().__init__(centre)
        self.radius = float(radius)
        self.bounding_radius = self.radius

    def _hit_local(self, o: np.ndarray, d: np.ndarray, t_min: float) -> tuple[np.ndarray, np.ndarray]:
        b = np.einsum("ij,ij->i", o, d)
        c = np.einsum("ij,ij->i", o, o) - self.radius**2
        disc = b * b - c
        s = np.sqrt(np.maximum(disc, 0.0))
        t1, t2 = -b - s, -b + s
        # The far root only matters for rays starting inside (never the case for cameras).
        t = np.where(t1 > t_min, t1, np.where(t2 > t_min, t2, np.inf))
        t = np.where(disc >= 0.0, t, np.inf)
        normal = (o + np.where(np.isfinite(t), t, 0.0)[:, None] * d) / self.radius
        return t, normal

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", p, p) <= self.radius**2

    def _extent(self) -> np.ndarray:
        return np.full(3, self.radius)


class Box(Shape):
    def __init__(self, centre: tuple[float, float, float], half: tuple[float, float, float], rot: np.ndarray | None = None) -> None:
        super().__init__(centre, rot)
        self.half = np.asarray(half, dtype=np.float64)
        self.bounding_radius = float(np.linalg.norm(self.half))

    def _hit_local(self, o: np.ndarray, d: np.ndarray, t_min: float) -> tuple[np.ndarray, np.ndarray]:
        safe = np.where(np.abs(d) < _TINY, _TINY, d)
        t0 = (-self.half - o) / safe
        t1 = (self.half - o) / safe
        t_in_axes, t_out_axes = np.minimum(t0, t1), np.maximum(t0, t1)
        ax_in, ax_out = t_in_axes.argmax(-1), t_out_axes.argmin(-1)
        rows = np.arange(len(o))
        t_in, t_out = t_in_axes[rows, ax_in], t_out_axes[rows, ax_out]
        entering = t_in > t_min
        t = np.where(entering, t_in, np.where(t_out > t_min, t_out, np.inf))
        t = np.where(t_in <= t_out, t, np.inf)
        # Entering through a face means moving against its normal; leaving, along it.
        axis = np.where(entering, ax_in, ax_out)
        sign = np.sign(safe[rows, axis]) * np.where(entering, -1.0, 1.0)
        normal = np.zeros_like(o)
        normal[rows, axis] = sign
        return t, normal

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        return np.all(np.abs(p) <= self.half, axis=-1)

    def _extent(self) -> np.ndarray:
        return np.abs(self.rot) @ self.half


class Cylinder(Shape):
    """Capped cylinder around the local z axis, ``|z| <= half_height``."""

    def __init__(self, centre: tuple[float, float, float], radius: float, half_height: float, rot: np.ndarray | None = None) -> None:
        super().__init__(centre, rot)
        self.radius, self.half_height = float(radius), float(half_height)
        self.bounding_radius = float(np.hypot(radius, half_height))

    def _hit_local(self, o: np.ndarray, d: np.ndarray, t_min: float) -> tuple[np.ndarray, np.ndarray]:
        r, h = self.radius, self.half_height
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - r * r
        disc = b * b - a * c
        side_ok = (a > _TINY) & (disc >= 0.0)
        s = np.sqrt(np.maximum(disc, 0.0))
        a_safe = np.where(side_ok, a, 1.0)
        dz = np.where(np.abs(d[:, 2]) < _TINY, _TINY, d[:, 2])
        # Candidates: the two side roots, then the bottom and top caps.
        cand = np.stack([(-b - s) / a_safe, (-b + s) / a_safe, (-h - o[:, 2]) / dz, (h - o[:, 2]) / dz], axis=-1)
        hit_pts = o[:, None, :] + cand[..., None] * d[:, None, :]
        on_side = side_ok[:, None] & (np.abs(hit_pts[..., 2]) <= h)
        on_cap = hit_pts[..., 0] ** 2 + hit_pts[..., 1] ** 2 <= r * r
        valid = np.concatenate([on_side[:, :2], on_cap[:, 2:]], axis=-1) & (cand > t_min)
        cand = np.where(valid, cand, np.inf)
        k = cand.argmin(-1)
        rows = np.arange(len(o))
        t = cand[rows, k]
        p = hit_pts[rows, k]
        normal = np.zeros_like(o)
        side = k < 2
        normal[side, :2] = p[side, :2] / r
        normal[~side, 2] = np.where(k[~side] == 2, -1.0, 1.0)
        return t, normal

    def _inside_local(self, p: np.ndarray) -> np.ndarray:
        return (p[:, 0] ** 2 + p[:, 1] ** 2 <= self.radius**2) & (np.abs(p[:, 2]) <= self.half_height)

    def _extent(self) -> np.ndarray:
        axis = np.abs(self.rot[:, 2])
        return self.half_height * axis + self.radius * np.sqrt(np.maximum(1.0 - axis**2, 0.0))


# ---- surface patterns: (world points, local points) -> (N, 3) albedo in [0, 1] -------------


class Pattern:
    def __call__(self, world: np.ndarray, local: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Solid(Pattern):
    def __init__(self, colour: tuple[float, float, float]) -> None:
        self.colour = np.asarray(colour, dtype=np.float64)

    def __call__(self, world: np.ndarray, local: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.colour, world.shape).copy()


def _mix(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    return a + (b - a) * w[:, None]


class Checker(Pattern):
    """3-D checkerboard of cubes of side ``cell`` over ``axes`` of world or local coordinates."""

    def __init__(self, a: tuple, b: tuple, cell: float, axes: tuple[int, ...] = (0, 1, 2), local: bool = False) -> None:
        self.a, self.b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        self.cell, self.axes, self.local = float(cell), list(axes), local

    def __call__(self, world: np.ndarray, local: np.ndarray) -> np.ndarray:
        p = local if self.local else world
        parity = np.floor(p[:, self.axes] / self.cell).astype(np.int64).sum(-1) % 2
        return _mix(self.a, self.b, parity.astype(np.float64))


class Stripes(Pattern):
    """Bands along one local axis; ``smooth`` gives cosine bands instead of hard edges."""

    def __init__(self, a: tuple, b: tuple, period: float, axis: int, smooth: bool = False) -> None:
        self.a, self.b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        self.period, self.axis, self.smooth = float(period), axis, smooth

    def __call__(self, world: np.ndarray, local: np.ndarray) -> np.ndarray:
        u = local[:, self.axis] / self.period
        w = 0.5 - 0.5 * np.cos(2.0 * np.pi * u) if self.smooth else np.floor(2.0 * u) % 2
        return _mix(self.a, self.b, w)


class AngularChecker(Pattern):
    """Checker in (angle around local z, local z): sectors times rings, for cylinders."""

    def __init__(self, a: tuple, b: tuple, sectors: int, ring: float) -> None:
        self.a, self.b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        self.sectors, self.ring = int(sectors), float(ring)

    def __call__(self, world: np.ndarray, local: np.ndarray) -> np.ndarray:
        angle = np.arctan2(local[:, 1], local[:, 0]) + np.pi
        sector = np.floor(angle / (2.0 * np.pi) * self.sectors).astype(np.int64)
        ring = np.floor(local[:, 2] / self.ring).astype(np.int64)
        return _mix(self.a, self.b, ((sector + ring) % 2).astype(np.float64))
