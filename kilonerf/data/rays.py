"""All pixels of a split as a flat table, for sampling random ray batches across images."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from kilonerf.data.cameras import camera_rays, pixel_coords
from kilonerf.data.scene import Scene


class RayTable:
    """Every pixel of one split: colour, image index and pixel position (and alpha if asked).

    Rays are computed on the fly from the stored poses, so memory is ~11 bytes per pixel
    rather than the 36 of precomputed float rays (which matters at 800 x 800 x 100 images).
    With ``with_alpha`` and a scene that has alphas, the colours returned have a fourth
    column, the pixel's alpha (for re-compositing onto other backgrounds, see
    :func:`recomposite`); otherwise they are RGB only.
    """

    def __init__(self, scene: Scene, split: str = "train", device: torch.device | str = "cpu", corner: bool = False,
                 with_alpha: bool = False):
        idx = scene.indices(split)
        self.device = torch.device(device)
        self.corner = corner
        rgbs, img_ids, xys = [], [], []
        for k, i in enumerate(idx):
            h, w = scene.image_size(int(i))
            rgbs.append(torch.from_numpy(scene.images[int(i)].reshape(-1, 3)))
            img_ids.append(torch.full((h * w,), k, dtype=torch.int32))
            xys.append(pixel_coords(h, w, corner=True).to(torch.int16))
        self.rgb_u8 = torch.cat(rgbs).to(self.device)
        """(P, 3) uint8."""
        self.image_index = torch.cat(img_ids).to(self.device)
        """(P,) int32 index into this split's images."""
        self.pixel_xy = torch.cat(xys).to(self.device)
        """(P, 2) int16 integer pixel (x, y)."""
        self.poses = torch.as_tensor(scene.poses[idx], dtype=torch.float32, device=self.device)
        self.intrinsics = torch.as_tensor(scene.intrinsics[idx], dtype=torch.float32, device=self.device)
        self.alpha_u8: Tensor | None = None
        """(P,) uint8, or None (not asked for, or the scene has no alpha)."""
        if with_alpha and scene.alphas is not None:
            self.alpha_u8 = torch.cat([torch.from_numpy(scene.alphas[int(i)].reshape(-1)) for i in idx]).to(self.device)
        self.sizes = [scene.image_size(int(i)) for i in idx]
        self.offsets = np.concatenate([[0], np.cumsum([h * w for h, w in self.sizes])])

    def __len__(self) -> int:
        return int(self.rgb_u8.shape[0])

    @property
    def num_images(self) -> int:
        return len(self.sizes)

    def rays(self, pixel_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Rays and colours of table rows ``pixel_ids`` (M,).

        Returns:
            world origins (M, 3) and unit dirs (M, 3) (renderers map them into their fields'
            space), rgb (M, 3)
            float32 in [0, 1] (composited on the scene's background), or (M, 4) with the alpha
            in [0, 1] last when the table holds it.
        """
        img = self.image_index[pixel_ids].long()
        xy = self.pixel_xy[pixel_ids].float() + (0.0 if self.corner else 0.5)
        origins, dirs = camera_rays(self.poses[img], self.intrinsics[img], xy)
        rgb = self.rgb_u8[pixel_ids]
        if self.alpha_u8 is not None:
            rgb = torch.cat([rgb, self.alpha_u8[pixel_ids, None]], dim=1)
        return origins, dirs, rgb.float() / 255.0

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``n`` random rays drawn uniformly over all pixels of all images (with replacement)."""
        ids = torch.randint(0, len(self), (n,), device=self.device, generator=generator)
        return self.rays(ids)

    def image(self, k: int, max_pixels: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """All rays of the split's ``k``-th image, row-major: origins, dirs, rgb (H*W, 3); with
        ``max_pixels``, at most that many of them, evenly strided (always the same ones)."""
        lo, hi = int(self.offsets[k]), int(self.offsets[k + 1])
        if max_pixels is not None and hi - lo > max_pixels:
            ids = torch.linspace(lo, hi - 1, max_pixels, device=self.device).round().long()
        else:
            ids = torch.arange(lo, hi, device=self.device)
        return self.rays(ids)


def recomposite(rgb: Tensor, alpha: Tensor, old_background: Tensor, new_background: Tensor) -> Tensor:
    """Colours composited on ``old_background`` moved onto ``new_background``.

    ``c = f a + (1 - a) old`` becomes ``f a + (1 - a) new = c + (1 - a) (new - old)``, so the
    straight (un-premultiplied) colour is never needed.

    Args:
        rgb: (N, 3) composited colours; alpha: (N,) in [0, 1].
        old_background: (3,) or (N, 3); new_background: (3,) or (N, 3).
    Returns:
        (N, 3).
    """
    return rgb + (1.0 - alpha)[:, None] * (new_background - old_background)
