"""A capture with known cameras, for checking ``kilonerf process`` against the truth: the built-in
procedural scene photographed along a hand-held-like orbit, saved as JPEG photos whose EXIF
carries the 35 mm-equivalent focal length (as a phone's do)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kilonerf.capture.frames import EXIF_IFD, FILM_WIDTH_MM, FOCAL_35MM
from kilonerf.data.procedural import (GROUND, LEGO_CAMERA_ANGLE_X, ProceduralScene, default_objects,
                                      distant_pillars, spiral_poses)  # fmt: skip
from kilonerf.data.procedural_environment import Environment

ORBIT_RADIUS = 4.0
"""Camera distance to the scene centre; the position errors are quoted relative to it."""


def orbit_poses(n: int) -> np.ndarray:
    """(n, 4, 4) cameras once around the scene at radius :data:`ORBIT_RADIUS`, elevation 30°
    wobbling by 15° (a walk around an object with a phone, held higher and lower)."""
    return spiral_poses(n, ORBIT_RADIUS, elevation_deg=30.0, wobble_deg=15.0)


def render_capture(out_dir: str | Path, n_views: int, size: int, kind: str = "unbounded", supersample: int = 1,
                   frames: bool = False) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Render ``n_views`` square photos of ``size`` pixels along :func:`orbit_poses` into
    ``out_dir/view_NNN.jpg`` (``kind`` ``unbounded``: the objects in their surroundings;
    ``object``: on white). With ``frames``, write nothing and only return the images.

    Returns:
        poses (n, 4, 4) camera-to-world (OpenGL axes), intrinsics (4,) fx fy cx cy, and the
        (size, size, 3) uint8 images.
    """
    scene = (ProceduralScene(default_objects() + distant_pillars(GROUND), environment=Environment(GROUND))
             if kind == "unbounded" else ProceduralScene())  # fmt: skip
    focal = 0.5 * size / np.tan(0.5 * LEGO_CAMERA_ANGLE_X)
    intrinsics = np.array([focal, focal, size / 2.0, size / 2.0])
    poses = orbit_poses(n_views)
    out = Path(out_dir)
    if not frames:
        out.mkdir(parents=True, exist_ok=True)
    images = []
    for i, pose in enumerate(poses):
        rgba = scene.render_view(pose, intrinsics, size, size, supersample).astype(np.float64)
        rgb = rgba[..., :3] * rgba[..., 3:] / 255.0 + 255.0 * (1.0 - rgba[..., 3:] / 255.0)  # onto white
        image = np.round(rgb).astype(np.uint8)
        images.append(image)
        if not frames:
            exif = Image.Exif()
            exif.get_ifd(EXIF_IFD)[FOCAL_35MM] = int(round(focal / size * FILM_WIDTH_MM))
            Image.fromarray(image).save(out / f"view_{i:03d}.jpg", quality=95, exif=exif)
    return poses, intrinsics, images
