"""Training and evaluating at a lower resolution than the photos: every image (and its alpha)
resized once with an area filter, the intrinsics scaled with it, everything kept as uint8."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from PIL import Image

from kilonerf.data.scene import Scene


def scale_factor(sizes: list[tuple[int, int]], downscale: float | None = None, max_size: int | None = None) -> float:
    """The factor to divide image sizes by: ``downscale`` (>= 1), raised where needed so that
    no image's longest side exceeds ``max_size`` pixels; 1 when neither asks for anything.

    Args:
        sizes: (height, width) of every image.
    """
    factor = 1.0 if downscale is None else float(downscale)
    if max_size is not None and sizes:
        longest = max(max(h, w) for h, w in sizes)
        factor = max(factor, longest / max_size)
    return max(factor, 1.0)


def resized_shape(height: int, width: int, factor: float) -> tuple[int, int]:
    """(height, width) divided by ``factor``, rounded, at least one pixel."""
    return max(1, round(height / factor)), max(1, round(width / factor))


def _area_resize(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W[, C]) uint8 -> ``shape`` with an area (box) filter."""
    h, w = shape
    if image.shape[:2] == (h, w):
        return image
    return np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BOX))  # writable, as decoded images are


def downscale_scene(scene: Scene, factor: float) -> Scene:
    """The scene with every image divided in size by ``factor`` (>= 1; 1 returns it unchanged).

    Intrinsics follow each image's actual new size (rounding included): focal lengths and the
    principal point scale by new / old width and height, so pixel centres keep their rays.
    """
    if factor <= 1.0 or math.isclose(factor, 1.0):
        return scene
    images, alphas, intrinsics = [], [] if scene.alphas is not None else None, scene.intrinsics.copy()
    for i, image in enumerate(scene.images):
        h, w = image.shape[:2]
        nh, nw = resized_shape(h, w, factor)
        images.append(_area_resize(image, (nh, nw)))
        if alphas is not None:
            alphas.append(_area_resize(scene.alphas[i], (nh, nw)))  # type: ignore[index]
        intrinsics[i] *= np.array([nw / w, nh / h, nw / w, nh / h])
    return replace(scene, images=images, alphas=alphas, intrinsics=intrinsics, downscale=scene.downscale * factor)
