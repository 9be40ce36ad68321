"""Lens distortion: OpenCV's radial-tangential model, as instant-ngp and nerfstudio record it
(``k1 k2 k3 p1 p2`` in ``transforms.json``) and as COLMAP's camera models carry it
(:func:`colmap_camera`).

Photos are undistorted once at load, not rays at every render: every later stage, renderer
and the compiled kernels then keep their pinhole cameras, and the cost is one resampling per
image. Each output pixel centre is pushed through the model (the direction that has a closed
form) and the photo is sampled there bilinearly, which is what OpenCV's ``undistort`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kilonerf.data.files import is_finite_number
from kilonerf.errors import SceneError

DISTORTION_KEYS = ("k1", "k2", "k3", "p1", "p2")


def frame_distortion(meta: dict[str, Any], frame: dict[str, Any], json_path: Path, k: int) -> np.ndarray | None:
    """(5,) ``k1 k2 k3 p1 p2`` of a frame (its own values over the file's), or None when all are
    zero; SceneError for a non-number or a model this loader does not undo (fisheye, k4)."""
    where = f"frame {k}"
    for key in ("is_fisheye", "k4"):
        value = frame.get(key, meta.get(key, 0))
        if value not in (0, 0.0, False, None):
            raise SceneError(json_path, f"{where}: '{key}' (a fisheye or rational lens model) is not supported; "
                             "undistort the photos first")
    coeffs = []
    for key in DISTORTION_KEYS:
        value = frame.get(key, meta.get(key, 0.0))
        if not is_finite_number(value):
            raise SceneError(json_path, f"{where}: '{key}' must be a finite number, got {value!r}")
        coeffs.append(float(value))
    out = np.array(coeffs)
    return out if np.any(out != 0.0) else None


COLMAP_MODELS = {
    # model: (parameter names, in COLMAP's order)
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k1"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}
"""COLMAP's camera models whose distortion is OpenCV's radial-tangential one (or none)."""


def colmap_camera(model: str, params: list[float] | np.ndarray, where: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
    """A COLMAP camera (model name and parameter list) -> pinhole ``fx fy cx cy`` (4,) and
    ``k1 k2 k3 p1 p2`` (5,) or None without distortion (COLMAP's pixel convention, the
    top-left corner at (0, 0), is this project's). SceneError for the fisheye and rational
    models, and for a parameter count that does not fit the model."""
    if model not in COLMAP_MODELS:
        raise SceneError(where, f"camera model '{model}' is not supported (have: {', '.join(COLMAP_MODELS)}); "
                         "undistort the photos first")
    names = COLMAP_MODELS[model]
    values = [float(v) for v in np.asarray(params, dtype=np.float64).reshape(-1)]
    if len(values) != len(names) or not np.isfinite(values).all():
        raise SceneError(where, f"camera model '{model}' needs {len(names)} finite parameters "
                         f"({' '.join(names)}), got {values}")
    p = dict(zip(names, values))
    fx, fy = p.get("fx", p.get("f")), p.get("fy", p.get("f"))
    intrinsics = np.array([fx, fy, p["cx"], p["cy"]])
    coeffs = np.array([p.get(k, 0.0) for k in DISTORTION_KEYS])
    return intrinsics, coeffs if np.any(coeffs != 0.0) else None


def distort(x: np.ndarray, y: np.ndarray, coeffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised pinhole coordinates (OpenCV axes: x right, y down) -> distorted ones."""
    k1, k2, k3, p1, p2 = coeffs
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def undistort_image(image: np.ndarray, intrinsics: np.ndarray, coeffs: np.ndarray,
                    fill: float | np.ndarray = 0.0) -> np.ndarray:  # fmt: skip
    """The pinhole image (same size and ``fx fy cx cy``) of a distorted photo.

    Args:
        image: (H, W) or (H, W, C) uint8. intrinsics: (4,). coeffs: (5,) ``k1 k2 k3 p1 p2``.
        fill: value (or (C,) values, 0 to 255) of pixels that see outside the photo.
    Returns:
        uint8 array of the same shape.
    """
    h, w = image.shape[:2]
    fx, fy, cx, cy = intrinsics
    u, v = np.meshgrid(np.arange(w, dtype=np.float64) + 0.5, np.arange(h, dtype=np.float64) + 0.5)
    xd, yd = distort((u - cx) / fx, (v - cy) / fy, coeffs)
    # Source position in array-index units (pixel centres at integers).
    su, sv = xd * fx + cx - 0.5, yd * fy + cy - 0.5
    u0, v0 = np.floor(su), np.floor(sv)
    fu, fv = su - u0, sv - v0
    src = image.astype(np.float32).reshape(h, w, -1)
    acc = np.zeros((h, w, src.shape[2]), np.float32)
    covered = np.zeros((h, w), np.float32)
    for du, dv, wt in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        uu, vv = u0 + du, v0 + dv
        wt = np.where((uu >= 0) & (uu < w) & (vv >= 0) & (vv < h), wt, 0.0).astype(np.float32)
        acc += src[np.clip(vv, 0, h - 1).astype(np.int64), np.clip(uu, 0, w - 1).astype(np.int64)] * wt[..., None]
        covered += wt
    # The share of the bilinear footprint that fell outside the photo takes the fill value.
    acc += (1.0 - covered)[..., None] * np.broadcast_to(np.asarray(fill, np.float32), (src.shape[2],))
    out = np.clip(np.rint(acc), 0, 255).astype(np.uint8)
    return out.reshape(image.shape)
