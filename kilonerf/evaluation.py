"""Render every view of a split with a model and measure it against the photos."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from kilonerf.data.images import to_uint8, write_png
from kilonerf.data.rays import RayTable
from kilonerf.data.scene import Scene
from kilonerf.io import atomic_dir, atomic_write_json
from kilonerf.kernels.perf import sync_device
from kilonerf.metrics import lpips, lpips_available, psnr, ssim, ssim_skimage
from kilonerf.metrics.lpips import MIN_SIDE
from kilonerf.render.volume import RenderFn
from kilonerf.train.distributed import SINGLE, Group

METRICS = ("psnr", "ssim", "ssim_skimage", "lpips")


def evaluate_split(
    render: RenderFn,
    scene: Scene,
    split: str,
    out_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    max_views: int | None = None,
    progress: bool = True,
    info: dict[str, Any] | None = None,
    group: Group = SINGLE,
) -> dict[str, Any]:
    """Render each view of ``split`` and score it.

    Returns ``info``'s entries (e.g. the model and the scene folder, for the record), the means
    of ``psnr``, ``ssim`` (Gaussian 11 x 11), ``ssim_skimage`` (uniform 7 x 7), ``lpips`` (Alex,
    standard [-1, 1] input; None where its weights are not installed or the images are under
    31 px) and ``ms_per_frame`` (render time only), plus ``images``: one dict
    per view with the same keys and its ``name``. With ``out_dir`` the renders are saved as
    ``<name>.png`` and everything as ``metrics.json`` there; the folder is filled beside its
    place and renamed at the end, replacing an earlier evaluation whole.

    With several ranks (``group``) each renders every N-th view; the views are gathered once
    and rank 0 alone writes (``ms_per_frame`` is then timed while the other ranks render too).
    """
    if out_dir is None or not group.is_main:
        return _evaluate(render, scene, split, None, torch.device(device), max_views, progress, info or {}, group)
    with atomic_dir(out_dir, overwrite=True) as folder:
        return _evaluate(render, scene, split, folder, torch.device(device), max_views, progress, info or {}, group)


def _evaluate(render: RenderFn, scene: Scene, split: str, folder: Path | None, device: torch.device,
              max_views: int | None, progress: bool, info: dict[str, Any], group: Group) -> dict[str, Any]:  # fmt: skip
    table = RayTable(scene, split, device=device)
    names = [scene.image_names[int(i)] for i in scene.indices(split)]
    count = table.num_images if max_views is None else min(max_views, table.num_images)
    per_image: list[dict[str, Any]] = []
    images: list[np.ndarray] = []
    with_lpips = lpips_available()
    views = range(count)[group.share(count)]
    for k in tqdm(views, desc=f"eval {split}", disable=not (progress and group.is_main), unit="view"):
        origins, dirs, rgb = table.image(k)
        h, w = table.sizes[k]
        sync_device(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            pred = render(origins, dirs)
        sync_device(device)
        ms = (time.perf_counter() - t0) * 1000.0
        pred_img = pred.float().clamp(0, 1).reshape(h, w, 3).cpu().numpy()
        gt_img = rgb.reshape(h, w, 3).cpu().numpy()
        row: dict[str, Any] = {
            "name": names[k],
            "psnr": psnr(pred_img, gt_img),
            "ssim": ssim(pred_img, gt_img),
            "ssim_skimage": ssim_skimage(pred_img, gt_img),
            "lpips": lpips(pred_img, gt_img) if with_lpips and min(h, w) >= MIN_SIDE else None,
            "ms_per_frame": ms,
        }
        per_image.append(row)
        images.append(to_uint8(pred_img))
    if group.active:  # rank r rendered views r, r + N, ...: interleave them back in order
        parts = group.gather((per_image, images))
        per_image = [parts[k % group.world][0][k // group.world] for k in range(count)]
        images = [parts[k % group.world][1][k // group.world] for k in range(count)]
    if folder is not None:
        for row, image in zip(per_image, images):
            write_png(folder / f"{row['name']}.png", image)
    result: dict[str, Any] = dict(info)
    result.update({key: _mean([r[key] for r in per_image]) for key in (*METRICS, "ms_per_frame")})
    result.update({"split": split, "views": count, "images": per_image})
    if folder is not None:
        atomic_write_json(folder / "metrics.json", result)
    return result


def _mean(values: list[float | None]) -> float | None:
    """The mean; None when any value is missing (LPIPS without its weights or on tiny images)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def format_table(rows: dict[str, dict[str, Any]]) -> str:
    """A small text table: one row per model, columns PSNR / SSIM / SSIM(skimage) / LPIPS / ms."""
    head = f"{'model':<10} {'PSNR':>7} {'SSIM':>7} {'SSIM-sk':>8} {'LPIPS':>7} {'ms/frame':>9}"
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        lpips_text = f"{r['lpips']:7.4f}" if isinstance(r.get("lpips"), (int, float)) else f"{'–':>7}"
        lines.append(
            f"{name:<10} {r['psnr']:7.2f} {r['ssim']:7.4f} {r['ssim_skimage']:8.4f} {lpips_text} {r['ms_per_frame']:9.1f}"
        )
    return "\n".join(lines)
