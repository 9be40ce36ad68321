"""Image quality metrics: PSNR, SSIM (two variants), LPIPS."""

from kilonerf.metrics.lpips import lpips, lpips_available
from kilonerf.metrics.psnr import mean_psnr, mse_to_psnr, psnr
from kilonerf.metrics.ssim import ssim, ssim_skimage

__all__ = ["lpips", "lpips_available", "mean_psnr", "mse_to_psnr", "psnr", "ssim", "ssim_skimage"]
