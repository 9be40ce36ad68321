"""PSNR on [0, 1] images, plus the image-input checks shared by all metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from kilonerf.errors import KiloNerfError

ImageLike = Union[torch.Tensor, np.ndarray]

# Float images may overshoot [0, 1] by rounding error (e.g. after compositing); anything
# beyond this is almost certainly a 0..255 image or an unclamped network output.
_RANGE_TOLERANCE = 1e-4


def to_image_tensor(image: ImageLike, name: str = "image", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Validate an RGB image and return it as a float tensor on its original device.

    Args:
        image: (H, W, 3) torch tensor or NumPy array; float in [0, 1], or uint8 (divided by 255).
        name: what to call the argument in error messages.
        dtype: floating dtype of the result.

    Returns:
        (H, W, 3) tensor of ``dtype``, values in [0, 1].
    """
    if isinstance(image, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(image))
    elif isinstance(image, torch.Tensor):
        tensor = image.detach()
    else:
        raise KiloNerfError(f"{name}: expected a torch tensor or NumPy array, got {type(image).__name__}")
    if tensor.ndim != 3 or tensor.shape[-1] != 3:
        raise KiloNerfError(f"{name}: expected shape (H, W, 3), got {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        return tensor.to(dtype) / 255.0
    if not tensor.is_floating_point():
        raise KiloNerfError(f"{name}: expected a float or uint8 image, got dtype {tensor.dtype}")
    tensor = tensor.to(dtype)
    if not bool(torch.isfinite(tensor).all()):
        raise KiloNerfError(f"{name}: contains NaN or infinite values")
    lo, hi = float(tensor.min()), float(tensor.max())
    if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise KiloNerfError(f"{name}: float values must lie in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return tensor


def image_pair(pred: ImageLike, target: ImageLike, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a prediction/target pair: both (H, W, 3), same shape, moved to ``pred``'s device."""
    p = to_image_tensor(pred, "pred", dtype)
    t = to_image_tensor(target, "target", dtype)
    if p.shape != t.shape:
        raise KiloNerfError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    return p, t.to(p.device)


def mse_to_psnr(mse: float) -> float:
    """PSNR in dB for a mean squared error on [0, 1] data: -10 log10(mse); inf when mse is 0."""
    if mse <= 0.0:
        return math.inf
    return -10.0 * math.log10(mse)


def mse_to_psnr_tensor(mse: torch.Tensor) -> torch.Tensor:
    """:func:`mse_to_psnr` on a tensor, without a device sync (training logs read it later)."""
    return -10.0 * torch.log10(mse)


def psnr(pred: ImageLike, target: ImageLike) -> float:
    """Peak signal-to-noise ratio of one image, from its MSE over all pixels and channels.

    Args:
        pred, target: (H, W, 3) images in [0, 1] (tensors or arrays; uint8 is divided by 255).

    Returns:
        PSNR in dB (``inf`` for identical images).
    """
    p, t = image_pair(pred, target)
    return mse_to_psnr(float(torch.mean((p - t) ** 2)))


def mean_psnr(preds: Sequence[ImageLike], targets: Sequence[ImageLike]) -> float:
    """Average of per-image PSNRs (the evaluation protocol), not the PSNR of the pooled MSE.

    Args:
        preds, targets: equal-length sequences of (H, W, 3) images in [0, 1].
    """
    if len(preds) != len(targets):
        raise KiloNerfError(f"mean_psnr: {len(preds)} predictions but {len(targets)} targets")
    if len(preds) == 0:
        raise KiloNerfError("mean_psnr: no images given")
    return sum(psnr(p, t) for p, t in zip(preds, targets)) / len(preds)
