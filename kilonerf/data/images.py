"""Reading, compositing and writing 8-bit images.

Every decode is forced to completion (``Image.load``), so a truncated file fails here with a
:class:`SceneError` naming it rather than later as a half-black training image.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kilonerf.errors import SceneError
from kilonerf.io import atomic_write_bytes


def read_image(path: str | Path) -> np.ndarray:
    """Decode one image file.

    Returns:
        (H, W, 3) or (H, W, 4) uint8: RGB, or RGBA where the file carries alpha (grey and
        palette images are expanded to RGB / RGBA).
    Raises:
        SceneError: the file is missing, not an image, truncated or corrupt.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # full decode: truncation surfaces now, not as silent padding later
            if im.mode not in ("RGB", "RGBA"):
                has_alpha = "A" in im.getbands() or "transparency" in im.info
                im = im.convert("RGBA" if has_alpha else "RGB")
            arr = np.array(im, dtype=np.uint8)  # a writable copy (asarray's view of PIL is read-only)
    except FileNotFoundError:
        raise SceneError(path, "image file not found") from None
    except IsADirectoryError:
        raise SceneError(path, "expected an image file, found a folder") from None
    except UnidentifiedImageError:
        raise SceneError(path, "not a readable image file") from None
    except Image.DecompressionBombError as exc:
        raise SceneError(path, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise SceneError(path, f"truncated or corrupt image ({exc})") from None
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SceneError(path, f"unexpected image shape {arr.shape}")
    return arr


def composite_rgba(rgba_u8: np.ndarray, background: Sequence[float] | np.ndarray) -> np.ndarray:
    """Alpha-composite onto a constant background colour.

    Args:
        rgba_u8: (H, W, 4) uint8 straight (non-premultiplied) alpha; (H, W, 3) is returned as is.
        background: (3,) RGB in [0, 1].
    Returns:
        (H, W, 3) uint8, ``round(rgb * a + 255 * bg * (1 - a))`` with ``a = alpha / 255``.
    """
    if rgba_u8.shape[-1] == 3:
        return rgba_u8
    bg = np.asarray(background, dtype=np.float32).reshape(3) * np.float32(255.0)
    rgb = rgba_u8[..., :3].astype(np.float32)
    a = rgba_u8[..., 3:4].astype(np.float32)
    # Numerator is exact in float32 when bg*255 is an integer; the exact quotient is a multiple
    # of 1/255 and never lies on a .5 tie, so rint gives the correctly rounded value.
    out = (rgb * a + bg * (np.float32(255.0) - a)) / np.float32(255.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def read_rgb(path: str | Path, background: Sequence[float] | np.ndarray) -> np.ndarray:
    """:func:`read_image` then :func:`composite_rgba`: (H, W, 3) uint8."""
    return composite_rgba(read_image(path), background)


def read_rgb_alpha(path: str | Path, background: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`read_image` then :func:`composite_rgba`, keeping the alpha.

    Returns:
        (H, W, 3) uint8 composited RGB and the (H, W) uint8 alpha, or None for an RGB file.
    """
    image = read_image(path)
    alpha = image[..., 3].copy() if image.shape[-1] == 4 else None
    return composite_rgba(image, background), alpha


def read_rgb_alpha_many(
    paths: Sequence[Path], background: Sequence[float] | np.ndarray
) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """Decode and composite many images in a thread pool (Pillow decodes without the GIL).

    Returns one (H, W, 3) uint8 array per path, in order, and the alphas as
    :func:`merge_alphas` gives them; the first failing file raises.
    """
    if len(paths) <= 1:
        pairs = [read_rgb_alpha(p, background) for p in paths]
    else:
        workers = min(8, len(paths), (os.cpu_count() or 1) + 2)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pairs = list(pool.map(lambda p: read_rgb_alpha(p, background), paths))
    images = [rgb for rgb, _ in pairs]
    return images, merge_alphas(images, [a for _, a in pairs])


def merge_alphas(images: Sequence[np.ndarray], alphas: Sequence[np.ndarray | None]) -> list[np.ndarray] | None:
    """None when no image had alpha, else one (H, W) uint8 alpha per image (255 for those
    without: their pixels are all photographed surface)."""
    if all(a is None for a in alphas):
        return None
    return [a if a is not None else np.full(im.shape[:2], 255, dtype=np.uint8) for im, a in zip(images, alphas)]


def read_rgb_many(paths: Sequence[Path], background: Sequence[float] | np.ndarray) -> list[np.ndarray]:
    """:func:`read_rgb_alpha_many` without the alphas: one (H, W, 3) uint8 array per path."""
    return read_rgb_alpha_many(paths, background)[0]


def check_same_size(images: Sequence[np.ndarray], paths: Sequence[Path], what: str) -> None:
    """Raise SceneError naming the first image whose (H, W) differs from the first one's."""
    if not images:
        return
    h, w = images[0].shape[:2]
    for img, p in zip(images, paths):
        if img.shape[:2] != (h, w):
            raise SceneError(
                p, f"image is {img.shape[1]} x {img.shape[0]} but {paths[0].name} is {w} x {h}; {what}"
            )


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] (clipped) -> uint8, rounding halves up: the one conversion used for
    every rendered image that is saved, encoded or shown."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W), (H, W, 3) or (H, W, 4) uint8 array."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ValueError(f"write_png needs (H, W[, 3|4]) uint8, got {arr.shape} {arr.dtype}")
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=4)
    return buf.getvalue()


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8 (H, W[, 3|4])) as a PNG, atomically (temp file + rename)."""
    atomic_write_bytes(path, encode_png(array))
