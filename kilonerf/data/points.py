"""A scene's sparse points (``points.ply`` beside the photos, written by ``kilonerf process``):
binary little-endian PLY with ``x y z`` float32 and ``red green blue`` uint8 per vertex, what
MeshLab, CloudCompare, Blender and Open3D open. A header and one NumPy record array."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kilonerf.errors import SceneError
from kilonerf.io import atomic_write_bytes

POINTS_FILE = "points.ply"
_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
_HEADER = ("ply\nformat binary_little_endian 1.0\ncomment written by kilonerf process\nelement vertex {n}\n"
           "property float x\nproperty float y\nproperty float z\n"
           "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n")  # fmt: skip


def ply_bytes(points: np.ndarray, colors: np.ndarray) -> bytes:
    """Binary PLY of points (N, 3) with colours (N, 3) uint8."""
    rec = np.empty(len(points), dtype=_DTYPE)
    for i, name in enumerate(("x", "y", "z")):
        rec[name] = points[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        rec[name] = colors[:, i]
    return _HEADER.format(n=len(points)).encode("ascii") + rec.tobytes()


def write_points(path: str | Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Write :func:`ply_bytes` atomically."""
    atomic_write_bytes(path, ply_bytes(points, colors))


def read_points(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) float32 and colours (N, 3) uint8 of a PLY in the layout :func:`ply_bytes`
    writes; SceneError for any other file (the message says what was found)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SceneError(path, f"cannot read ({exc.strerror or exc})") from None
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise SceneError(path, "not a PLY file")
    lines = data[:end].decode("ascii", "replace").splitlines()
    counts = [ln.split()[2] for ln in lines if ln.startswith("element vertex ")]
    props = [ln for ln in lines if ln.startswith("property ")]
    expected = [ln for ln in _HEADER.splitlines() if ln.startswith("property ")]
    if "format binary_little_endian 1.0" not in lines or props != expected or len(counts) != 1 or not counts[0].isdigit():
        raise SceneError(path, "PLY layout not supported (expected binary x y z float, red green blue uchar vertices)")
    n = int(counts[0])
    body = data[end + len(b"end_header\n"):]
    if len(body) < n * _DTYPE.itemsize:
        raise SceneError(path, f"truncated PLY ({n} vertices announced, {len(body) // _DTYPE.itemsize} present)")
    rec = np.frombuffer(body, dtype=_DTYPE, count=n)
    points = np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float32)
    colors = np.stack([rec["red"], rec["green"], rec["blue"]], axis=1).astype(np.uint8)
    return points, colors
