"""``kilonerf render``: a run's model along a camera path, into an MP4 or a folder of PNGs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kilonerf.data.camera_paths import CameraPath, make_camera_path, save_camera_path
from kilonerf.data.cameras import camera_rays, pixel_coords
from kilonerf.data.images import to_uint8
from kilonerf.io import check_output_file
from kilonerf.render.volume import RenderFn
from kilonerf.run.folder import RunDir
from kilonerf.run.models import default_model, load_renderer, load_run_scene
from kilonerf.train.distributed import SINGLE, Group
from kilonerf.video import check_output, write_frames


def render_frames(render: RenderFn, path: CameraPath, device: torch.device | str = "cpu",
                  progress: bool = True, group: Group = SINGLE) -> Iterator[np.ndarray]:  # fmt: skip
    """Render each camera of ``path``; yields
    (height, width, 3) uint8 frames, one at a time (so a long video never sits in memory).

    With several ranks (``group``) the frames go in rounds of N: rank r renders frame
    ``round * N + r`` and each round is gathered, so every rank yields every frame in order
    while at most N frames are held at once (rank 0 alone shows the progress bar).
    """
    device = torch.device(device)
    pixels = pixel_coords(path.height, path.width, device=device)
    poses = torch.as_tensor(path.poses, dtype=torch.float32, device=device)
    intrinsics = torch.as_tensor(path.intrinsics, dtype=torch.float32, device=device)
    count = len(path)
    with tqdm(total=count, desc="render", unit="frame", disable=not (progress and group.is_main)) as bar:
        for first in range(0, count, group.world):
            k = first + group.rank
            frame = None
            if k < count:  # the last round may leave some ranks without a frame
                origins, dirs = camera_rays(poses[k], intrinsics[k], pixels)
                with torch.no_grad():
                    rgb = render(origins, dirs).float().clamp(0, 1)
                frame = to_uint8(rgb.reshape(path.height, path.width, 3).cpu().numpy())
            for shown in group.gather(frame):
                if shown is not None:
                    bar.update(1)
                    yield shown


def check_render_outputs(out: str | Path | None, save_path: str | Path | None, overwrite: bool) -> None:
    """Fail at once (before any work) on an ``out`` or ``save_path`` that may not be written."""
    if out is not None:
        check_output(out, overwrite)
    if save_path is not None:
        check_output_file(save_path, "--save-path")


def render_run(
    run_dir: str | Path,
    path_spec: str,
    out: str | Path | None,
    model: str | None = None,
    width: int | None = None,
    frames: int | None = None,
    fps: float = 30.0,
    device: torch.device | str = "cpu",
    data: str | Path | None = None,
    save_path: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    group: Group = SINGLE,
) -> tuple[CameraPath, str]:
    """Render ``model`` (default: the student once trained) of a run along ``path_spec``
    (``orbit``, ``spiral``, ``test`` or a camera-path JSON file) into ``out``.

    ``width`` rescales the cameras to that many pixels wide; ``frames`` is the length of a
    generated path (or the cut of a given one); ``save_path`` also writes the path as JSON.
    ``out`` may be None when only ``save_path`` is wanted. Returns the path and the model.

    With several ranks (``group``) each renders every N-th frame (see :func:`render_frames`)
    and rank 0 alone writes ``out`` and ``save_path``.
    """
    run = RunDir(Path(run_dir))
    run.read_meta()
    check_render_outputs(out, save_path, overwrite)
    model = model or default_model(run)
    scene = load_run_scene(run, data)
    path = make_camera_path(path_spec, scene, frames, width)
    if save_path is not None and group.is_main:
        save_camera_path(path, save_path)
    if out is not None:
        render = load_renderer(run, model, scene, torch.device(device))
        images = render_frames(render, path, device, progress, group)
        if group.is_main:
            write_frames(out, images, fps)
        else:
            for _ in images:  # this rank's share of every round, gathered by rank 0
                pass
    return path, model
