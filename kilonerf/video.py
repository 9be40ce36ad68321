"""Writing rendered frames: an MP4 (H.264 through imageio-ffmpeg) or a folder of PNGs.

Both are written atomically: the MP4 into a temp file renamed at the end, the PNGs into a temp
folder renamed at the end, so a failed or interrupted render leaves nothing partial.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kilonerf.data.images import write_png
from kilonerf.errors import KiloNerfError
from kilonerf.io import atomic_dir, atomic_output, check_output_parent


def output_kind(out: str | Path) -> str:
    """``"mp4"`` for a ``.mp4`` file, ``"dir"`` for a folder (an existing one, or a name
    without a suffix); anything else is an error."""
    out = Path(out)
    if out.suffix.lower() == ".mp4" and not out.is_dir():
        return "mp4"
    if out.is_dir() or out.suffix == "":
        return "dir"
    raise KiloNerfError(f"{out}: unsupported output '{out.suffix}'; give a .mp4 file or a folder for PNG frames")


def check_output(out: str | Path, overwrite: bool) -> str:
    """The output kind, after checking that ``out`` may be written (an existing file or
    non-empty folder only with ``overwrite``); call it before rendering to fail early."""
    out = Path(out)
    kind = output_kind(out)
    check_output_parent(out, "--out", create=kind == "dir")
    if kind == "mp4" and out.exists() and not overwrite:
        raise KiloNerfError(f"{out}: already exists (pass --overwrite to replace it)")
    if kind == "dir" and out.exists() and not out.is_dir() and not overwrite:
        raise KiloNerfError(f"{out}: a file exists there (pass --overwrite to replace it with a folder of frames)")
    if kind == "dir" and out.is_dir() and any(out.iterdir()) and not overwrite:
        raise KiloNerfError(f"{out}: folder exists and is not empty (pass --overwrite to replace it)")
    return kind


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad to even height and width by repeating the last row / column: H.264 in yuv420p
    (what browsers play) needs even sizes."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Encode (H, W, 3) uint8 frames as H.264 MP4 at ``fps``; returns the frame count."""
    import imageio_ffmpeg

    count = 0
    with atomic_output(path) as tmp:
        writer = None
        try:
            for frame in frames:
                frame = np.ascontiguousarray(_even(frame))
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp), (frame.shape[1], frame.shape[0]), fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                        macro_block_size=1, quality=8, ffmpeg_log_level="error",
                    )  # fmt: skip
                    writer.send(None)  # start the generator (and ffmpeg)
                writer.send(frame)
                count += 1
        finally:
            if writer is not None:
                writer.close()
        if count == 0:
            raise KiloNerfError(f"{path}: no frames to write")
    return count


def write_png_dir(out: str | Path, frames: Iterable[np.ndarray]) -> int:
    """Write frames as ``0000.png, 0001.png, ...`` into folder ``out`` (replaced as a whole);
    returns the frame count."""
    count = 0
    with atomic_dir(out, overwrite=True) as folder:
        for count, frame in enumerate(frames, start=1):
            write_png(folder / f"{count - 1:04d}.png", frame)
    return count


def write_frames(out: str | Path, frames: Iterable[np.ndarray], fps: float = 30.0) -> int:
    """Frames to ``out``: an MP4 when it ends in ``.mp4``, else PNGs in the folder ``out``."""
    if output_kind(out) == "mp4":
        return write_mp4(out, frames, fps)
    return write_png_dir(out, frames)
