"""Overlays drawn over the render: training cameras, the scene box, the network grid, and the
sparse points of a scene made by ``kilonerf process``."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import viser

from kilonerf.data.points import POINTS_FILE, read_points
from kilonerf.data.scene import Scene
from kilonerf.errors import KiloNerfError
from kilonerf.viewer.camera import training_cameras


def box_edges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(12, 2, 3) segments: the edges of the axis-aligned box [lo, hi]."""
    corners = np.array([[hi[i] if (c >> i) & 1 else lo[i] for i in range(3)] for c in range(8)])
    # Two corners share an edge when their bit patterns differ in exactly one axis.
    pairs = [(a, b) for a, b in itertools.combinations(range(8), 2) if bin(a ^ b).count("1") == 1]
    return np.stack([corners[[a, b]] for a, b in pairs])


def grid_lines(lo: np.ndarray, hi: np.ndarray, res: tuple[int, int, int]) -> np.ndarray:
    """(M, 2, 3) segments: the cell edges of a ``res`` grid over [lo, hi] that lie on the
    box's faces, each spanning the box (the interior lattice would hide the render)."""
    ticks = [np.linspace(lo[i], hi[i], res[i] + 1) for i in range(3)]
    segs = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for i, j in itertools.product(range(res[u] + 1), range(res[v] + 1)):
            if i not in (0, res[u]) and j not in (0, res[v]):
                continue
            a, b = ticks[u][i], ticks[v][j]
            p0, p1 = np.empty(3), np.empty(3)
            p0[u] = p1[u] = a
            p0[v] = p1[v] = b
            p0[axis], p1[axis] = lo[axis], hi[axis]
            segs.append((p0, p1))
    return np.asarray(segs)


def to_world(scene: Scene, segments: np.ndarray, pieces: int = 24) -> np.ndarray:
    """(M, 2, 3) segments in the fields' space -> world segments: unchanged for ``object``
    scenes; otherwise each is cut into ``pieces`` and mapped back by the scene's ray map (the
    lines curve in the world), keeping the inner half of the box per axis (the foreground cube
    of an ``unbounded`` scene, the nearer half of a ``forward`` one), since the rest reaches
    to infinity."""
    if scene.ray_map is None or len(segments) == 0:
        return segments
    centre = scene.bbox.mean(0)
    half = 0.25 * (scene.bbox[1] - scene.bbox[0])
    ends = np.clip(segments, centre - half, centre + half)
    s = np.linspace(0.0, 1.0, pieces + 1)[None, :, None]
    pts = ends[:, :1] + s * (ends[:, 1:] - ends[:, :1])  # (M, pieces + 1, 3)
    world = scene.ray_map.unmap_points(torch.as_tensor(pts.reshape(-1, 3), dtype=torch.float64)).numpy()
    world = world.reshape(pts.shape)
    return np.stack([world[:, :-1], world[:, 1:]], axis=2).reshape(-1, 2, 3)


MAX_POINTS = 50_000
"""Sparse points sent to a tab at most (a random subset beyond)."""


def scene_points(scene: Scene) -> tuple[np.ndarray, np.ndarray] | None:
    """Points (N, 3) and colours (N, 3) uint8 of the scene folder's ``points.ply`` (at most
    :data:`MAX_POINTS`), or None when it has none or it cannot be read."""
    path = scene.root / POINTS_FILE if scene.root is not None else None
    if path is None or not path.is_file():
        return None
    try:
        points, colors = read_points(path)
    except KiloNerfError:
        return None  # an overlay is optional; a bad file must not stop the viewer
    if len(points) > MAX_POINTS:
        pick = np.random.default_rng(0).choice(len(points), MAX_POINTS, replace=False)
        points, colors = points[pick], colors[pick]
    return points, colors


@dataclass
class Overlays:
    """One tab's overlay scene nodes, each shown or hidden on its own."""

    cameras: list[viser.CameraFrustumHandle]
    box: viser.LineSegmentsHandle
    grid: viser.LineSegmentsHandle | None
    points: viser.PointCloudHandle | None = None

    def show(self, cameras: bool, box: bool, grid: bool, points: bool = True) -> None:
        for frustum in self.cameras:
            frustum.visible = cameras
        self.box.visible = box
        if self.grid is not None:
            self.grid.visible = grid
        if self.points is not None:
            self.points.visible = points


def add_overlays(
    scene_api: viser.SceneApi, scene: Scene, network_bbox: np.ndarray | None, network_res: tuple[int, int, int] | None,
    cameras: bool, box: bool, grid: bool, points: bool = True,
) -> Overlays:  # fmt: skip
    """Add the overlays of ``scene`` (and the student's network grid, when given; the sparse
    points when the scene folder has ``points.ply``) to a tab."""
    cams = training_cameras(scene)
    # A mapped scene's box is not in world units: size the frustums by the cameras' spread.
    spread = float(np.ptp(np.array([c.position for c in cams]), axis=0).max()) if cams else 1.0
    extent = float(np.max(scene.bbox[1] - scene.bbox[0])) if scene.ray_map is None else spread
    # Thickness in screen pixels: world-sized lines would swamp the view near the camera.
    line = {"thickness": 1.5, "thickness_units": "screen"}
    frustums = [
        scene_api.add_camera_frustum(
            f"/training_cameras/{i:04d}", fov=cam.fov_y, aspect=cam.aspect, scale=0.04 * extent,
            color=(40, 90, 200), wxyz=cam.wxyz, position=cam.position, visible=cameras, **line,
        )
        for i, cam in enumerate(cams)
    ]  # fmt: skip
    box_node = scene_api.add_line_segments(
        "/scene_box", to_world(scene, box_edges(scene.bbox[0], scene.bbox[1])), colors=(220, 60, 40), visible=box, **line
    )
    grid_node = None
    if network_bbox is not None and network_res is not None:
        grid_node = scene_api.add_line_segments(
            "/network_grid", to_world(scene, grid_lines(network_bbox[0], network_bbox[1], network_res)), colors=(60, 160, 60),
            visible=grid, thickness=1.0, thickness_units="screen",
        )  # fmt: skip
    cloud = scene_points(scene)
    points_node = None
    if cloud is not None:
        points_node = scene_api.add_point_cloud("/sparse_points", points=cloud[0], colors=cloud[1],
                                                point_size=0.01 * spread, visible=points)  # fmt: skip
    return Overlays(cameras=frustums, box=box_node, grid=grid_node, points=points_node)
