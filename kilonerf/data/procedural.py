"""The built-in procedural scene: a few textured solids ray traced exactly, no download.

Six objects on a checkered platform inside roughly [-1, 1]^3 (z up, like Blender's Lego):
a glossy red sphere (Blinn-Phong highlight from a fixed directional light, so its colour
depends on the view direction), a striped rotated box with a checkered ball on top, a pillar
with an angular checker, and a lying log with smooth bands. Diffuse shading with hard shadows
from the same light; white background. Textures are kept coarse (cells >= ~1/10 of an object)
and the highlight broad (exponent 40) so a small radiance field can learn the scene.

:func:`write_procedural_scene` writes it in Blender format (plus NSVF-style ``bbox.txt`` and
``near_and_far.txt``), deterministically from a seed.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kilonerf.data.cameras import camera_rays, look_at, pixel_coords
from kilonerf.data.procedural_shapes import (
    AngularChecker, Box, Checker, Cylinder, Pattern, Shape, Solid, Sphere, Stripes, rotation,
)
from kilonerf.data.procedural_environment import Environment
from kilonerf.errors import SceneError
from kilonerf.names import PROCEDURAL_KINDS
from kilonerf.io import atomic_write_json, atomic_write_text, is_occupied

LEGO_CAMERA_ANGLE_X = 0.6911112070083618
FLOOR = -0.4
"""World z of the platform's top face; the objects stand on it."""
GROUND = FLOOR - 0.15
"""World z of the ground of the 360° scene (the platform's bottom face)."""


@dataclass(frozen=True)
class SceneObject:
    name: str
    shape: Shape
    pattern: Pattern
    specular: float = 0.0
    """Blinn-Phong specular weight; 0 makes the surface purely diffuse (view independent)."""
    shininess: float = 40.0


def default_objects() -> tuple[SceneObject, ...]:
    """The six objects of the default scene."""
    f = FLOOR
    return (
        SceneObject("platform", Box((0.0, 0.0, f - 0.075), (0.95, 0.95, 0.075)),
                    Checker((0.93, 0.92, 0.86), (0.22, 0.42, 0.55), cell=0.38, axes=(0, 1))),
        SceneObject("glossy_sphere", Sphere((0.3, 0.25, f + 0.42), 0.42), Solid((0.82, 0.12, 0.1)),
                    specular=0.7, shininess=40.0),
        SceneObject("striped_box", Box((-0.45, -0.35, f + 0.25), (0.28, 0.2, 0.25), rotation(30.0)),
                    Stripes((0.95, 0.78, 0.2), (0.2, 0.3, 0.75), period=0.224, axis=0)),
        SceneObject("checker_ball", Sphere((-0.45, -0.35, f + 0.7), 0.2),
                    Checker((0.55, 0.28, 0.7), (0.96, 0.92, 0.82), cell=0.1, local=True),
                    specular=0.3, shininess=20.0),
        SceneObject("pillar", Cylinder((-0.45, 0.5, f + 0.4), 0.2, 0.4),
                    AngularChecker((0.2, 0.62, 0.3), (0.95, 0.95, 0.92), sectors=8, ring=0.16)),
        SceneObject("log", Cylinder((0.45, -0.5, f + 0.15), 0.15, 0.35, rotation(25.0, 90.0)),
                    Stripes((0.55, 0.35, 0.18), (0.88, 0.72, 0.5), period=0.2, axis=2, smooth=True)),
    )


def distant_pillars(ground_z: float, radius: float = 7.5, count: int = 6) -> tuple[SceneObject, ...]:
    """A ring of striped pillars standing on the ground ``radius`` from the centre (the 360°
    scene's middle distance)."""
    colours = [((0.8, 0.3, 0.25), (0.95, 0.9, 0.8)), ((0.25, 0.45, 0.75), (0.9, 0.9, 0.85)),
               ((0.85, 0.7, 0.2), (0.3, 0.25, 0.2))]  # fmt: skip
    out = []
    for k in range(count):
        a = np.radians(15.0 + 360.0 * k / count)
        a_col, b_col = colours[k % len(colours)]
        shape = Cylinder((radius * np.cos(a), radius * np.sin(a), ground_z + 1.2), 0.35, 1.2)
        out.append(SceneObject(f"pillar_{k}", shape, Stripes(a_col, b_col, period=0.4, axis=2)))
    return tuple(out)


class ProceduralScene:
    """Exact ray tracing and occupancy of a set of :class:`SceneObject` (NumPy float64), on
    white or, with an ``environment``, in surroundings that every ray sees."""

    def __init__(self, objects: tuple[SceneObject, ...] | None = None,
                 light_dir: tuple[float, float, float] = (-0.45, -0.6, 1.0),
                 environment: Environment | None = None) -> None:  # fmt: skip
        self.objects = default_objects() if objects is None else tuple(objects)
        self.environment = environment
        light = np.asarray(light_dir, dtype=np.float64)
        self.light_dir = light / np.linalg.norm(light)
        """(3,) unit vector towards the (directional) light."""
        b = np.stack([o.shape.bounds() for o in self.objects])
        self.bbox = np.stack([b[:, 0].min(0), b[:, 1].max(0)])
        """(2, 3) tight box around all objects: min xyz, max xyz."""

    def object(self, name: str) -> SceneObject:
        return next(o for o in self.objects if o.name == name)

    def occupancy(self, points: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N,) bool: the (N, 3) world points are inside (or on) some object."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        inside = np.zeros(len(p), dtype=bool)
        for obj in self.objects:
            inside |= obj.shape.contains(p)
        return inside

    def voxel_occupancy(self, bbox: np.ndarray, res: tuple[int, int, int], samples: int = 5) -> np.ndarray:
        """bool (X, Y, Z): voxels of ``res`` over ``bbox`` (2, 3) that hold a point of some
        object, judged on a lattice of ``samples`` points per voxel and axis (corners included,
        so neighbours share their faces). Evaluated one lattice plane at a time."""
        box = np.asarray(bbox, dtype=np.float64).reshape(2, 3)
        k = samples - 1
        axes = [np.linspace(box[0, a], box[1, a], k * res[a] + 1) for a in range(3)]
        yz = np.stack(np.meshgrid(axes[1], axes[2], indexing="ij"), -1).reshape(-1, 2)
        out = np.zeros(res, dtype=bool)
        for i, x in enumerate(axes[0]):
            plane = self.occupancy(np.concatenate([np.full((len(yz), 1), x), yz], 1))
            plane = plane.reshape(len(axes[1]), len(axes[2]))
            pooled = torch.nn.functional.max_pool2d(torch.from_numpy(plane)[None, None].float(), k + 1, stride=k)
            # Lattice plane i lies in voxel i // k and, on a voxel face, also in the one before.
            for v in {min(i // k, res[0] - 1), max(i - 1, 0) // k}:
                out[v] |= pooled[0, 0].bool().numpy()
        return out

    def nearest_hit(self, origins: np.ndarray, dirs: np.ndarray, t_min: float = 1e-9) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """First surface along (N, 3) rays with unit ``dirs``.

        Returns t (N,) (``inf`` on a miss), object index (N,) int (-1 on a miss) and outward
        unit normals (N, 3).
        """
        n = len(origins)
        t_best = np.full(n, np.inf)
        ids = np.full(n, -1, dtype=np.int64)
        normals = np.zeros((n, 3))
        # Many camera rays miss the scene box entirely: drop them before the per-object tests.
        live = np.nonzero(_hits_box(origins, dirs, self.bbox, t_min))[0]
        if live.size < n:
            t, i, nrm = self.nearest_hit(origins[live], dirs[live], t_min) if live.size else (t_best[:0], ids[:0], normals[:0])
            t_best[live], ids[live], normals[live] = t, i, nrm
            return t_best, ids, normals
        for k, obj in enumerate(self.objects):
            # Cull with the object's bounding sphere; only the survivors get the exact test.
            oc = origins - obj.shape.centre
            b = np.einsum("ij,ij->i", oc, dirs)
            r = obj.shape.bounding_radius * (1.0 + 1e-9) + 1e-9
            disc = b * b - (np.einsum("ij,ij->i", oc, oc) - r * r)
            s = np.sqrt(np.maximum(disc, 0.0))
            idx = np.nonzero((disc >= 0.0) & (-b + s > t_min) & (-b - s < t_best))[0]
            if idx.size == 0:
                continue
            t, nrm = obj.shape.intersect(origins[idx], dirs[idx], t_min)
            closer = t < t_best[idx]
            sel = idx[closer]
            t_best[sel], ids[sel], normals[sel] = t[closer], k, nrm[closer]
        return t_best, ids, normals

    def shade(self, points: np.ndarray, normals: np.ndarray, ids: np.ndarray, dirs: np.ndarray) -> np.ndarray:
        """(N, 3) colour of surface points (N, 3) of objects ``ids`` seen along view ``dirs``."""
        light = self.light_dir
        # Offset along the normal so the shadow ray does not re-hit its own surface.
        t_shadow, _, _ = self.nearest_hit(points + 1e-6 * normals, np.broadcast_to(light, points.shape))
        n_dot_l = np.clip(normals @ light, 0.0, None) * np.isinf(t_shadow)
        half = light - dirs
        half /= np.linalg.norm(half, axis=-1, keepdims=True)
        n_dot_h = np.clip(np.einsum("ij,ij->i", normals, half), 0.0, None)
        ambient = 0.32 + 0.08 * normals[:, 2]
        rgb = np.empty_like(points)
        for k, obj in enumerate(self.objects):
            m = ids == k
            if not m.any():
                continue
            albedo = obj.pattern(points[m], obj.shape.to_local(points[m]))
            rgb[m] = albedo * (ambient[m] + 0.68 * n_dot_l[m])[:, None]
            if obj.specular > 0.0:
                spec = obj.specular * n_dot_h[m] ** obj.shininess * (n_dot_l[m] > 0.0)
                rgb[m] += spec[:, None]
        return np.clip(rgb, 0.0, 1.0)

    def trace(self, origins: np.ndarray | torch.Tensor, dirs: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Trace (N, 3) rays.

        Returns rgb (N, 3) float64 composited on white, alpha (N,) (1 on a hit, 0 on a miss) and
        depth (N,): distance along the normalised direction, ``inf`` on a miss. With an
        environment, the rays that miss every object see it instead (alpha 1, the sky at ``inf``).
        """
        o = np.asarray(origins, dtype=np.float64).reshape(-1, 3)
        d = np.asarray(dirs, dtype=np.float64).reshape(-1, 3)
        d = d / np.linalg.norm(d, axis=-1, keepdims=True)
        t, ids, normals = self.nearest_hit(o, d)
        hit = ids >= 0
        rgb = np.ones((len(o), 3))
        if hit.any():
            p = o[hit] + t[hit, None] * d[hit]
            rgb[hit] = self.shade(p, normals[hit], ids[hit], d[hit])
        if self.environment is not None:
            miss = ~hit
            if miss.any():
                rgb[miss], t[miss] = self.environment.colour(self, o[miss], d[miss])
            return rgb, np.ones(len(o)), t
        return rgb, hit.astype(np.float64), t

    def render_view(self, pose: np.ndarray | torch.Tensor, intrinsics: tuple[float, float, float, float] | np.ndarray,
                    height: int, width: int, supersample: int = 2, chunk: int = 1 << 14) -> np.ndarray:
        """(H, W, 4) uint8 RGBA image of one camera (pose (4, 4) camera-to-world, OpenGL axes).

        Each pixel averages a ``supersample`` x ``supersample`` grid of sub-pixel rays; alpha is
        the covered fraction and RGB the un-premultiplied colour, so compositing onto white
        gives the anti-aliased render.
        """
        s = int(supersample)
        pixels = pixel_coords(height * s, width * s).double() / s
        # One torch thread: interleaved with NumPy work on a busy machine, torch's OpenMP pool
        # made this small call ~30x slower.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            o, d = camera_rays(torch.as_tensor(np.asarray(pose), dtype=torch.float64),
                               torch.as_tensor(np.asarray(intrinsics), dtype=torch.float64), pixels)
        finally:
            torch.set_num_threads(threads)
        o, d = o.numpy(), d.numpy()
        rgb, alpha = np.empty((len(o), 3)), np.empty(len(o))
        for i in range(0, len(o), chunk):
            rgb[i:i + chunk], alpha[i:i + chunk], _ = self.trace(o[i:i + chunk], d[i:i + chunk])
        cover = alpha.reshape(height, s, width, s).mean(axis=(1, 3))
        premult = (rgb * alpha[:, None]).reshape(height, s, width, s, 3).mean(axis=(1, 3))
        straight = np.where(cover[..., None] > 0, premult / np.maximum(cover, 1e-12)[..., None], 1.0)
        rgba = np.concatenate([straight, cover[..., None]], axis=-1)
        return np.round(np.clip(rgba, 0.0, 1.0) * 255.0).astype(np.uint8)


def _hits_box(origins: np.ndarray, dirs: np.ndarray, bbox: np.ndarray, t_min: float) -> np.ndarray:
    """(N,) bool: the rays meet the (slightly padded) box beyond ``t_min``."""
    safe = np.where(np.abs(dirs) < 1e-15, 1e-15, dirs)
    t0 = (bbox[0] - 1e-6 - origins) / safe
    t1 = (bbox[1] + 1e-6 - origins) / safe
    lo, hi = np.minimum(t0, t1), np.maximum(t0, t1)
    # Column-wise max / min: much faster than reducing over a length-3 last axis.
    t_near = np.maximum(np.maximum(lo[:, 0], lo[:, 1]), lo[:, 2])
    t_far = np.minimum(np.minimum(hi[:, 0], hi[:, 1]), hi[:, 2])
    return (t_far >= t_near) & (t_far > t_min)


def _sphere_poses(azimuth: np.ndarray, elevation: np.ndarray, radius: float) -> np.ndarray:
    eyes = radius * np.stack([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)], -1)
    return np.stack([look_at(e) for e in eyes]) if len(eyes) else np.zeros((0, 4, 4))


def camera_poses(n: int, radius: float = 4.0, seed: int | np.random.Generator = 0,
                 elevation_deg: tuple[float, float] = (5.0, 85.0)) -> np.ndarray:
    """(n, 4, 4) random cameras on the upper hemisphere looking at the origin.

    Uniform over the sphere's area between the two elevations (like Blender's random views).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    lo, hi = np.sin(np.radians(elevation_deg[0])), np.sin(np.radians(elevation_deg[1]))
    z = rng.uniform(lo, hi, n)
    azimuth = rng.uniform(0.0, 2.0 * np.pi, n)
    return _sphere_poses(azimuth, np.arcsin(z), radius)


def spiral_poses(n: int, radius: float = 4.0, elevation_deg: float = 30.0, wobble_deg: float = 10.0,
                 phase: float = 0.0) -> np.ndarray:
    """(n, 4, 4) one orbit around z whose elevation wobbles twice by ``wobble_deg``."""
    k = np.arange(n) / max(n, 1)
    azimuth = phase + 2.0 * np.pi * k
    elevation = np.radians(elevation_deg + wobble_deg * np.sin(4.0 * np.pi * k))
    return _sphere_poses(azimuth, elevation, radius)


def write_procedural_scene(out_dir: str | Path, size: int = 100, n_train: int = 100, n_val: int = 20,
                           n_test: int = 50, seed: int = 0, overwrite: bool = False, supersample: int = 2,
                           radius: float = 4.0, kind: str = "object", height: int | None = None) -> Path:
    """Render the built-in scene to a Blender-format folder and return its path.

    ``kind`` (:data:`PROCEDURAL_KINDS`): ``object`` writes ``{split}/r_{i}.png`` as RGBA on
    white, with ``bbox.txt`` (``xmin ymin zmin xmax ymax zmax``) and ``near_and_far.txt``;
    ``unbounded`` writes opaque RGB photos of the objects in their surroundings, from cameras
    at elevations of 5 to 50 degrees, and no box (it is a 360° capture). Images are ``size``
    pixels wide and ``height`` (default ``size``) tall. Also writes
    ``transforms_{train,val,test}.json``. Everything goes into a temp folder beside
    ``out_dir`` that is renamed at the end. Same seed, same bytes.
    """
    if kind not in PROCEDURAL_KINDS:
        raise SceneError(Path(out_dir), f"unknown procedural scene kind '{kind}' (have: {', '.join(PROCEDURAL_KINDS)})")
    out = Path(out_dir)
    if is_occupied(out) and not overwrite:
        raise SceneError(out, "already exists and is not empty (use --overwrite / overwrite=True to replace it)")
    unbounded = kind == "unbounded"
    scene = (ProceduralScene(default_objects() + distant_pillars(GROUND), environment=Environment(GROUND))
             if unbounded else ProceduralScene())  # fmt: skip
    width, height = size, height or size
    focal = 0.5 * width / np.tan(0.5 * LEGO_CAMERA_ANGLE_X)
    intrinsics = (focal, focal, 0.5 * width, 0.5 * height)
    elevation = (5.0, 50.0) if unbounded else (5.0, 85.0)
    splits = {
        "train": camera_poses(n_train, radius, np.random.default_rng([seed, 0]), elevation),
        "val": camera_poses(n_val, radius, np.random.default_rng([seed, 1]), elevation),
        "test": spiral_poses(n_test, radius, elevation_deg=20.0 if unbounded else 30.0,
                             phase=float(np.random.default_rng([seed, 2]).uniform(0, 2 * np.pi))),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o755)
        for split, poses in splits.items():
            (tmp / split).mkdir()
            frames = []
            for i, pose in enumerate(poses):
                buf = io.BytesIO()
                rgba = scene.render_view(pose, intrinsics, height, width, supersample)
                Image.fromarray(rgba[..., :3] if unbounded else rgba).save(buf, format="PNG")
                (tmp / split / f"r_{i}.png").write_bytes(buf.getvalue())
                frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": pose.tolist()})
            atomic_write_json(tmp / f"transforms_{split}.json", {"camera_angle_x": LEGO_CAMERA_ANGLE_X, "frames": frames})
        if not unbounded:
            box = scene.bbox + np.array([[-0.05], [0.05]])
            atomic_write_text(tmp / "bbox.txt", " ".join(f"{v:.4f}" for v in box.reshape(-1)) + "\n")
            # Every object lies within 2 of the origin, so [radius - 2, radius + 2] covers it.
            atomic_write_text(tmp / "near_and_far.txt", f"{radius - 2.0} {radius + 2.0}\n")
        if out.exists() or out.is_symlink():
            if is_occupied(out) and not overwrite:
                raise SceneError(out, "appeared while rendering and is not empty (use --overwrite / overwrite=True)")
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
