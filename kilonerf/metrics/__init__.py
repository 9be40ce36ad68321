"""Image quality metrics: PSNR, SSIM (two variants), LPIPS."""
