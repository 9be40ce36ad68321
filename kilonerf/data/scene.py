"""The one in-memory scene type every loader produces.

Conventions (all loaders convert to these):
- ``poses`` are camera-to-world 4 x 4 matrices in the OpenGL / Blender axis convention:
  camera +x right, +y up, the camera looks along -z. World units are the dataset's own.
- ``intrinsics`` are pinhole ``fx, fy, cx, cy`` in pixels, with the image's top-left corner
  at (0, 0): the centre of pixel (col i, row j) is at (i + 0.5, j + 0.5).
- ``images`` are uint8 RGB, already composited onto ``background`` where the source had alpha;
  that alpha is kept in ``alphas`` (so training can re-composite onto other backgrounds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class FieldRays:
    """Camera rays in the fields' space, each as ``pieces`` straight pieces, front to back.

    A scene type's map may bend a world ray where its pieces meet (``unbounded``); within a
    piece the ray is straight, so box intersection, fixed-step marching and empty-space
    skipping stay exact there. Renderers render every piece as a ray of its own and join them
    with :func:`kilonerf.render.volume.join_pieces`.
    """

    origins: "Tensor"
    """(N * K, 3) ray k of camera ray n at row n * K + k."""
    dirs: "Tensor"
    """(N * K, 3) unit directions."""
    near: "Tensor"
    far: "Tensor"
    """(N * K,) the piece's extent along its ray (near == far: an empty piece)."""
    pieces: int
    """K, pieces per camera ray."""


class RayMap(Protocol):
    """A scene type's mapping of world rays into the fields' space (``scene_types.py``)."""

    def map_rays(self, origins: "Tensor", dirs: "Tensor") -> FieldRays: ...

    def unmap_points(self, points: "Tensor") -> "Tensor": ...

    def voxel_mask(self, bbox: "Tensor", res: tuple[int, int, int]) -> "Tensor | None":
        """(X, Y, Z) bool: the voxels of a grid over ``bbox`` that rays can reach (None: all)."""
        ...


@dataclass
class Scene:
    images: list[np.ndarray]
    """One (H, W, 3) uint8 array per image."""
    intrinsics: np.ndarray
    """(N, 4) float64: fx, fy, cx, cy in pixels."""
    poses: np.ndarray
    """(N, 4, 4) float64 camera-to-world, OpenGL axes."""
    splits: dict[str, np.ndarray]
    """Split name -> int64 indices into ``images``."""
    bbox: np.ndarray
    """(2, 3) float64 axis-aligned scene box: min xyz, max xyz (in the fields' space: NDC for
    ``forward`` scenes)."""
    near: float
    far: float
    """Ray distances bounding the scene (in the fields' space, along the mapped unit rays)."""
    background: np.ndarray = field(default_factory=lambda: np.ones(3, dtype=np.float32))
    """(3,) float32 RGB in [0, 1]."""
    image_names: list[str] = field(default_factory=list)
    """A stable name per image (file stem), used when writing the scene out again."""
    root: Path | None = None
    format: str = ""
    alphas: list[np.ndarray] | None = None
    """One (H, W) uint8 coverage per image (255: opaque), as read before compositing; None
    when no source image had alpha (images without it among others that have it get 255)."""
    scene_type: str = "object"
    """``object``, ``forward`` or ``unbounded`` (``scene_types.py``; ``load_scene`` resolves it)."""
    ray_map: RayMap | None = None
    """World rays -> the fields' space; None for ``object``."""
    downscale: float = 1.0
    """How many times smaller than the files the images are (``load_scene``'s resizing)."""
    box_given: bool = False
    """The box came with the data (``bbox.txt``), not from a format's default: a capture
    around it is an object capture, not an unbounded one."""

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.intrinsics.shape != (n, 4) or self.poses.shape != (n, 4, 4):
            raise ValueError(
                f"Scene: {n} images but intrinsics {self.intrinsics.shape} and poses {self.poses.shape}"
            )
        if self.alphas is not None and (
            len(self.alphas) != n or any(a.shape != im.shape[:2] for a, im in zip(self.alphas, self.images))
        ):
            raise ValueError("Scene: alphas must hold one (H, W) array per image")
        if not self.image_names:
            self.image_names = [f"{i:04d}" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def image_size(self, i: int) -> tuple[int, int]:
        """(height, width) of image ``i``."""
        h, w = self.images[i].shape[:2]
        return h, w

    def indices(self, split: str) -> np.ndarray:
        if split not in self.splits:
            where = self.root if self.root is not None else "scene"
            raise KeyError(f"{where}: no '{split}' split (has: {', '.join(self.splits) or 'none'})")
        return self.splits[split]

    def subset(self, split: str) -> "Scene":
        """A scene holding only ``split``'s images, with that one split."""
        idx = self.indices(split)
        return Scene(
            images=[self.images[i] for i in idx],
            intrinsics=self.intrinsics[idx],
            poses=self.poses[idx],
            splits={split: np.arange(len(idx), dtype=np.int64)},
            bbox=self.bbox.copy(),
            near=self.near,
            far=self.far,
            background=self.background.copy(),
            image_names=[self.image_names[i] for i in idx],
            root=self.root,
            format=self.format,
            alphas=None if self.alphas is None else [self.alphas[i] for i in idx],
            scene_type=self.scene_type,
            ray_map=self.ray_map,
            downscale=self.downscale,
            box_given=self.box_given,
        )

    def stacked_images(self, split: str) -> np.ndarray:
        """(M, H, W, 3) uint8 for a split whose images share one size."""
        idx = self.indices(split)
        sizes = {self.images[i].shape for i in idx}
        if len(sizes) != 1:
            raise ValueError(f"split '{split}' mixes image sizes {sorted(sizes)}")
        return np.stack([self.images[i] for i in idx])
