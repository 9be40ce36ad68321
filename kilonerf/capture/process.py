"""``kilonerf process``: a capture (photos or a video) -> camera poses -> a scene folder.

Everything is built in a temp folder beside ``--out`` and renamed at the end, so a capture that
fails (too few images, too few registered) leaves nothing partial behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kilonerf.capture.frames import CaptureImages, read_capture
from kilonerf.capture.normalize import WorldTransform, fit_box, guess_scene_type, normalizing_transform
from kilonerf.capture.sfm import Reconstruction, run_sfm
from kilonerf.capture.write import IMAGES_DIR, write_scene
from kilonerf.data.images import write_png
from kilonerf.errors import KiloNerfError, SceneError
from kilonerf.io import atomic_dir, check_output_parent, is_occupied

MIN_REGISTERED_FRACTION = 0.5


@dataclass
class ProcessResult:
    """What :func:`process_capture` did, for the summary."""

    out: Path
    capture: CaptureImages
    rec: Reconstruction
    transform: WorldTransform
    scene_type: str
    reason: str
    box: np.ndarray | None
    matching: str


def process_capture(
    source: str | Path, out: str | Path, matching: str | None = None, max_images: int | None = None,
    max_size: int | None = None, overwrite: bool = False, progress: bool = True,
) -> ProcessResult:
    """Reconstruct the cameras of ``source`` (a folder of photos or a video) and write the scene
    folder ``out`` (see :mod:`kilonerf.capture.write`).

    Args:
        matching: ``exhaustive`` or ``sequential``; None picks sequential for a video and
            exhaustive for photos.
        max_images: photos picked evenly / video frames kept (sharpest per window).
        max_size: longest image side in pixels (images are shrunk, never enlarged).
    Raises:
        KiloNerfError: bad input, or a capture that does not reconstruct (one line, with advice).
    """
    source, out = Path(source), Path(out)
    check_output_parent(out, "--out", create=True)
    if source.resolve() == out.resolve() or out.resolve() in source.resolve().parents:
        raise SceneError(out, f"would replace the input {source}; give another --out")
    if is_occupied(out) and not overwrite:
        raise SceneError(out, "already exists and is not empty (pass --overwrite to replace it)")
    if max_size is not None and max_size < 16:
        raise KiloNerfError(f"--max-size must be at least 16 pixels, got {max_size}")
    capture = read_capture(source, max_images, max_size)
    matching = matching or ("sequential" if capture.source == "video" else "exhaustive")
    with atomic_dir(out, overwrite=out.exists()) as tmp:
        images = tmp / IMAGES_DIR
        images.mkdir()
        for name, image in zip(capture.names, capture.images):
            write_png(images / name, image)
        rec = run_sfm(images, capture.names, tmp / "colmap", matching, progress, capture.focal,
                      capture.images[0].shape[:2])
        if rec.registered < MIN_REGISTERED_FRACTION * rec.total:
            raise KiloNerfError(
                f"{source}: only {rec.registered} of {rec.total} images registered (need at least half); "
                "take photos with more overlap between neighbours, "
                + ("use fewer, closer frames (--max-images)" if capture.source == "video"
                   else "try --matching sequential if they are in capture order, or fewer images (--max-images)"))  # fmt: skip
        kept = set(rec.names)
        unregistered = [n for n in capture.names if n not in kept]
        for name in unregistered:
            (images / name).unlink()
        (tmp / "colmap" / "database.db").unlink(missing_ok=True)  # large, and rebuilt in minutes
        (tmp / "colmap" / "pairs.txt").unlink(missing_ok=True)
        transform = normalizing_transform(rec.poses)
        poses, points = transform.apply_poses(rec.poses), transform.apply_points(rec.points)
        scene_type, reason = guess_scene_type(poses, points)
        box = fit_box(points, poses, scene_type)
        info: dict[str, Any] = {"input": str(source.resolve()), "source": capture.source, "matching": matching,
                                "frames_available": capture.total, "unregistered": unregistered,
                                "exif_focal_px": capture.focal}  # fmt: skip
        write_scene(tmp, rec, transform, scene_type, reason, box, info)
    return ProcessResult(out, capture, rec, transform, scene_type, reason, box, matching)


def format_summary(result: ProcessResult) -> str:
    """The one-screen summary printed at the end of ``kilonerf process``."""
    rec = result.rec
    fx, fy, cx, cy = rec.intrinsics
    dist = "none" if rec.distortion is None else " ".join(f"{k}={v:.4f}" for k, v in zip(("k1", "k2", "k3", "p1", "p2"), rec.distortion) if v)
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in rec.seconds.items())
    source = f"{result.capture.total} {'frames' if result.capture.source == 'video' else 'photos'}"
    box = ("not used (forward-facing: normalised device coordinates)" if result.box is None else
           f"[{' '.join(f'{v:.2f}' for v in result.box[0])}] .. [{' '.join(f'{v:.2f}' for v in result.box[1])}]")  # fmt: skip
    lines = [
        f"registered   {rec.registered} / {rec.total} images ({100.0 * rec.registered / rec.total:.0f}%; "
        f"input: {source}, {result.matching} matching)",
        f"reprojection {rec.mean_error:.3f} px mean, {len(rec.points)} sparse points, {rec.models} reconstruction(s) "
        "found (largest kept)",
        f"camera       {rec.camera_model} {rec.width} x {rec.height}: fx {fx:.1f} fy {fy:.1f} cx {cx:.1f} cy {cy:.1f}, "
        f"distortion {dist}",
        f"scene type   {result.scene_type} ({result.reason})",
        f"box          {box}",
        f"world        mean camera up -> +z, centred on the look-at point, scaled x{result.transform.scale:.4g} "
        "(capture.json records it)",
        f"time         {seconds}",
        f"wrote        {result.out}/ (transforms.json, {IMAGES_DIR}/, points.ply, scene_type.txt"
        + (", bbox.txt" if result.box is not None else ", near_and_far.txt") + ", capture.json, colmap/sparse/0/)",
        f"next         kilonerf train {result.out} --out runs/{result.out.name}",
    ]
    return "\n".join(lines)
