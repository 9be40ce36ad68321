"""SSIM in two labelled variants.

* ``ssim``: the common NeRF protocol. Gaussian 11 x 11 window (sigma 1.5), K1 = 0.01,
  K2 = 0.03, data range 1, population (not sample) statistics, valid windows only, computed
  per channel and averaged. Equal to ``skimage.metrics.structural_similarity(...,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1,
  channel_axis=-1)``, but in torch with a separable convolution.
* ``ssim_skimage``: scikit-image's default (uniform 7 x 7 window, sample covariance), which
  the original KiloNeRF code reported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kilonerf.errors import KiloNerfError
from kilonerf.metrics.psnr import ImageLike, image_pair

WINDOW_SIZE = 11
SIGMA = 1.5
K1 = 0.01
K2 = 0.03


def gaussian_kernel_1d(size: int = WINDOW_SIZE, sigma: float = SIGMA, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Normalised 1-D Gaussian taps, shape (size,), centred on the middle tap."""
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    taps = torch.exp(-(x**2) / (2.0 * sigma**2))
    return taps / taps.sum()


def _blur_valid(maps: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable 2-D Gaussian filter keeping only full windows: (N, 1, H, W) -> (N, 1, H-k+1, W-k+1)."""
    k = taps.numel()
    rows = F.conv2d(maps, taps.view(1, 1, 1, k))
    return F.conv2d(rows, taps.view(1, 1, k, 1))


def ssim(pred: ImageLike, target: ImageLike) -> float:
    """Gaussian-window SSIM (NeRF protocol), averaged over pixels with a full window and over channels.

    Args:
        pred, target: (H, W, 3) images in [0, 1] (tensors or arrays), H and W >= 11.

    Returns:
        SSIM in [-1, 1]; 1 for identical images.
    """
    p, t = image_pair(pred, target)
    h, w, _ = p.shape
    if h < WINDOW_SIZE or w < WINDOW_SIZE:
        raise KiloNerfError(f"ssim: images must be at least {WINDOW_SIZE} x {WINDOW_SIZE}, got {h} x {w}")
    taps = gaussian_kernel_1d(dtype=p.dtype).to(p.device)
    x = p.permute(2, 0, 1)  # (3, H, W): channels are scored independently
    y = t.permute(2, 0, 1)
    # One convolution pass over all five moment maps of all three channels.
    moments = torch.stack([x, y, x * x, y * y, x * y], dim=1).reshape(15, 1, h, w)
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur_valid(moments, taps).reshape(3, 5, h - WINDOW_SIZE + 1, -1).unbind(1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1 = K1**2  # data range is 1
    c2 = K2**2
    numerator = (2.0 * mu_x * mu_y + c1) * (2.0 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    per_channel = (numerator / denominator).mean(dim=(1, 2))
    return float(per_channel.mean())


def ssim_skimage(pred: ImageLike, target: ImageLike) -> float:
    """SSIM as the original KiloNeRF code computed it: scikit-image's default settings.

    Uniform 7 x 7 window, sample covariance, ``data_range=1``, ``channel_axis=-1``.

    Args:
        pred, target: (H, W, 3) images in [0, 1] (tensors or arrays), H and W >= 7.
    """
    from skimage.metrics import structural_similarity  # deferred: skimage import is slow

    p, t = image_pair(pred, target)
    if min(p.shape[0], p.shape[1]) < 7:
        raise KiloNerfError(f"ssim_skimage: images must be at least 7 x 7, got {p.shape[0]} x {p.shape[1]}")
    return float(
        structural_similarity(p.cpu().numpy(), t.cpu().numpy(), channel_axis=-1, data_range=1.0)
    )
