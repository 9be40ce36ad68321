"""The images a capture starts from: a folder of photos, or frames picked from a video.

From a video, ``max_images`` frames are taken evenly: the frames are cut into that many equal
windows and the sharpest frame of each window is kept (variance of the Laplacian, the usual
blur measure), so a shaky hand-held pass gives crisp frames spread over the whole path.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kilonerf.data.files import natural_key
from kilonerf.data.images import composite_rgba, read_image
from kilonerf.data.resize import resized_shape, scale_factor
from kilonerf.errors import KiloNerfError, SceneError

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
MIN_IMAGES = 3
"""Fewer images than this cannot give a reconstruction (two views fix no scale-free structure
that a third could check)."""
DEFAULT_VIDEO_FRAMES = 100


@dataclass
class CaptureImages:
    """The images to reconstruct, all the same size, in capture order."""

    images: list[np.ndarray]
    """(H, W, 3) uint8 each."""
    names: list[str]
    """File name each image is written under (unique, sorted like the capture)."""
    source: str
    """``photos`` or ``video``."""
    total: int
    """Photos found, or frames decoded from the video, before ``max_images`` picked some."""
    focal: float | None = None
    """Focal length in pixels (of the images as kept) from the photos' EXIF, or None."""


def input_kind(path: Path) -> str:
    """``photos`` for a folder, ``video`` for a video file; KiloNerfError for anything else."""
    if not path.exists():
        raise SceneError(path, "not found (give a folder of JPEG/PNG photos or a video file)")
    if path.is_dir():
        return "photos"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    raise SceneError(path, f"not a folder of photos nor a video ({', '.join(VIDEO_SUFFIXES)})")


def even_picks(n: int, k: int | None) -> np.ndarray:
    """Indices of ``k`` items spread evenly over ``n`` (all when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(int))


def read_photos(folder: Path, max_images: int | None = None, max_size: int | None = None) -> CaptureImages:
    """The JPEG / PNG photos of ``folder`` (natural name order), ``max_images`` of them picked
    evenly, each shrunk to at most ``max_size`` pixels on its longest side.

    Raises:
        SceneError: no photos, fewer than :data:`MIN_IMAGES`, an unreadable photo, or photos of
            different sizes (one camera is assumed for all of them).
    """
    paths = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES),
                   key=lambda p: natural_key(p.name))  # fmt: skip
    if not paths:
        raise SceneError(folder, f"no photos ({', '.join(PHOTO_SUFFIXES)}) in this folder")
    total = len(paths)
    paths = [paths[i] for i in even_picks(len(paths), max_images)]
    _check_count(folder, len(paths), "photos")
    images, first, focal = [], None, None
    for path in paths:
        image = read_image(path)
        if image.shape[2] == 4:  # a cut-out: the transparent parts become white, as the loaders do
            image = composite_rgba(image, (1.0, 1.0, 1.0))
        if first is None:
            first = (path, image.shape[:2])
        elif image.shape[:2] != first[1]:
            h, w = image.shape[:2]
            raise SceneError(path, f"is {w} x {h} pixels but {first[0].name} is {first[1][1]} x {first[1][0]}; "
                             "all photos must come from one camera at one size (remove or resize the odd ones)")
        # Shrunk as read: a hundred full-size photos would not fit in memory together.
        images.append(resize_all([image], max_size)[0])
        focal = focal if focal is not None else exif_focal(path)
    names = _unique_names([p.stem for p in paths])
    if focal is not None:
        focal *= max(images[0].shape[:2]) / max(first[1])  # type: ignore[index]
    return CaptureImages(images, names, "photos", total, focal)


EXIF_IFD = 0x8769
FOCAL_35MM = 0xA405
FILM_WIDTH_MM = 36.0


def exif_focal(path: Path) -> float | None:
    """Focal length in pixels from a photo's EXIF 35 mm-equivalent focal length (the tag phones
    and most cameras write): ``f35 / 36 mm * longest side``. None when the tag is missing.

    Re-encoded as PNG for COLMAP, the photos lose their EXIF, so the prior is passed on
    explicitly; it starts the focal length near the truth, which matters on captures dominated
    by a flat surface (a floor, a table), where self-calibration alone is ambiguous."""
    try:
        with Image.open(path) as im:
            value = im.getexif().get_ifd(EXIF_IFD).get(FOCAL_35MM)
            size = max(im.size)
    except (OSError, ValueError, SyntaxError):
        return None
    try:
        f35 = float(value)
    except (TypeError, ValueError):
        return None
    return f35 / FILM_WIDTH_MM * size if f35 > 0 else None


def _check_count(where: Path, n: int, what: str) -> None:
    if n < MIN_IMAGES:
        raise SceneError(where, f"only {n} {what}; structure from motion needs at least {MIN_IMAGES} "
                         "(20-200 overlapping views work best)")


def _unique_names(stems: list[str]) -> list[str]:
    """PNG names for the stems; a stem that repeats (``a.jpg`` and ``a.png``) gets a suffix."""
    seen: dict[str, int] = {}
    out = []
    for stem in stems:
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        out.append(f"{stem}.png" if count == 0 else f"{stem}_{count}.png")
    return out


def resize_all(images: list[np.ndarray], max_size: int | None) -> list[np.ndarray]:
    """The images shrunk (area filter) so their longest side is at most ``max_size``."""
    factor = scale_factor([im.shape[:2] for im in images], max_size=max_size)
    if factor <= 1.0:
        return images
    out = []
    for image in images:
        h, w = resized_shape(*image.shape[:2], factor)
        out.append(np.array(Image.fromarray(image).resize((w, h), Image.Resampling.BOX)))
    return out


def sharpness(image: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (H, W, 3) uint8: high for sharp frames,
    low for blurred ones (motion blur removes the high frequencies it measures)."""
    grey = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    lap = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4.0 * grey[1:-1, 1:-1])
    return float(lap.var()) if lap.size else 0.0


def sharpest_per_window(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (sorted) of the best score in each of ``k`` equal windows over ``scores`` (n,)
    (every index when k >= n)."""
    n = len(scores)
    if k >= n:
        return np.arange(n)
    edges = np.round(np.linspace(0, n, k + 1)).astype(int)
    return np.array([a + int(np.argmax(scores[a:b])) for a, b in zip(edges[:-1], edges[1:])])


def _decode(path: Path) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 frames of a video, through imageio-ffmpeg."""
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    try:
        meta = next(reader)
    except (RuntimeError, OSError, StopIteration) as exc:
        raise SceneError(path, f"cannot decode this video ({_first_line(exc)})") from None
    w, h = meta["size"]
    try:
        for raw in reader:
            yield np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3)
    except (RuntimeError, OSError) as exc:
        raise SceneError(path, f"video decoding failed ({_first_line(exc)})") from None
    finally:
        reader.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def read_video(path: Path, max_images: int | None = None, max_size: int | None = None) -> CaptureImages:
    """``max_images`` (default :data:`DEFAULT_VIDEO_FRAMES`) frames of a video: the sharpest of
    each of that many equal windows, shrunk to ``max_size``.

    Frames are decoded twice (once to score them, once to keep the chosen ones), so memory
    holds only the kept frames, not the whole video.
    """
    k = max_images or DEFAULT_VIDEO_FRAMES
    scores = np.array([sharpness(_small(frame)) for frame in _decode(path)])
    if len(scores) == 0:
        raise SceneError(path, "no decodable frames in this video")
    keep = sharpest_per_window(scores, k)
    _check_count(path, len(keep), "frames decodable from this video")
    wanted = set(int(i) for i in keep)
    frames = [frame.copy() for i, frame in enumerate(_decode(path)) if i in wanted]
    if len(frames) != len(keep):
        raise SceneError(path, "the video decoded differently the second time; re-encode it (e.g. with ffmpeg)")
    names = [f"frame_{int(i):05d}.png" for i in keep]
    return CaptureImages(resize_all(frames, max_size), names, "video", len(scores))


def _small(frame: np.ndarray) -> np.ndarray:
    """Every other pixel of frames over 1000 px: sharpness ranks frames the same at half size,
    for a quarter of the work."""
    return frame[::2, ::2] if max(frame.shape[:2]) > 1000 else frame


def read_capture(path: Path, max_images: int | None = None, max_size: int | None = None) -> CaptureImages:
    """The images of a capture (a photo folder or a video); see :func:`read_photos` and
    :func:`read_video`."""
    if max_images is not None and max_images < MIN_IMAGES:
        raise KiloNerfError(f"--max-images must be at least {MIN_IMAGES}, got {max_images}")
    if input_kind(path) == "photos":
        return read_photos(path, max_images, max_size)
    return read_video(path, max_images, max_size)
