"""Write a Scene as an NSVF or Blender folder (``kilonerf convert``).

Both writers fill a temp folder beside the destination and rename it into place, so an
interrupted or failed write leaves nothing partial. Numbers are written with Python's
shortest round-trip ``repr``, and images as RGB PNG (already composited), so loading the
written folder gives bit-identical pixels and the same poses and intrinsics.

Each split is written separately; an image in two splits (LLFF's val and test) is written
once per split. Both formats need one image size per split.

NSVF output: ``rgb/``, ``pose/`` (OpenCV axes), ``bbox.txt`` (with NSVF's voxel size, the
longest side / 8, which kilonerf ignores), ``near_and_far.txt``, ``background_color.txt`` and
``intrinsics.txt`` when every camera shares its intrinsics, else one ``intrinsics/<stem>.txt``
per image (a kilonerf extension; NSVF itself has one intrinsics file).

Blender output: ``transforms_<split>.json`` with ``camera_angle_x`` plus per-frame ``fl_x fl_y
cx cy w h`` (so non-square and off-centre intrinsics survive), ``<split>/<name>.png``,
``bbox.txt``, ``near_and_far.txt`` and ``background_color.txt``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from kilonerf.data.images import write_png
from kilonerf.data.files import natural_key
from kilonerf.data.load import load_scene
from kilonerf.data.nsvf import OPENCV_TO_OPENGL
from kilonerf.data.scene import SPLIT_NAMES, Scene
from kilonerf.errors import KiloNerfError
from kilonerf.io import atomic_dir, atomic_write_text
from kilonerf.names import WRITE_FORMATS



def _num(x: float) -> str:
    return repr(float(x))


def _rows(matrix: np.ndarray) -> str:
    return "".join(" ".join(_num(v) for v in row) + "\n" for row in np.atleast_2d(matrix))


def _file_names(names: Sequence[str]) -> list[str]:
    """File-system-safe, unique names (suffix ``_<k>`` on repeats) that the NSVF loader's
    natural sort puts back in this order (else each gets a zero-padded index prefix)."""
    out: list[str] = []
    seen: set[str] = set()
    for k, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).lstrip(".") or f"{k:04d}"
        while safe in seen:
            safe = f"{safe}_{k}"
        seen.add(safe)
        out.append(safe)
    if sorted(out, key=natural_key) != out:
        width = len(str(len(out) - 1))
        out = [f"{k:0{width}d}_{n}" for k, n in enumerate(out)]
    return out


def _check_splits(scene: Scene, dst: Path, fmt: str) -> list[str]:
    """The scene's splits in train/val/test order; each must have images of one size."""
    for split in scene.splits:
        if split not in SPLIT_NAMES:
            raise KiloNerfError(f"{dst}: {fmt} output has no place for split '{split}' (only train, val, test)")
    order = [s for s in SPLIT_NAMES if s in scene.splits and len(scene.splits[s])]
    if not order:
        raise KiloNerfError(f"{dst}: the scene has no images in any split")
    for split in order:
        sizes = {scene.image_size(int(i)) for i in scene.splits[split]}
        if len(sizes) > 1:
            raise KiloNerfError(f"{dst}: {fmt} needs one image size per split; '{split}' has {sorted(sizes)} (H, W)")
    return order


def _side_files(scene: Scene, folder: Path) -> list[tuple[Path, str | np.ndarray]]:
    """bbox.txt (NSVF's 7th number, a voxel size, = longest side / 8), near_and_far.txt and
    background_color.txt."""
    voxel = float((scene.bbox[1] - scene.bbox[0]).max()) / 8
    return [
        (folder / "bbox.txt", " ".join(_num(v) for v in [*scene.bbox.reshape(-1), voxel]) + "\n"),
        (folder / "near_and_far.txt", f"{_num(scene.near)} {_num(scene.far)}\n"),
        (folder / "background_color.txt", " ".join(_num(v) for v in scene.background) + "\n"),
    ]


def _write_files(jobs: list[tuple[Path, str | np.ndarray]]) -> None:
    """Write text files and PNGs (uint8 arrays) in a thread pool: each write ends in an fsync,
    which dominates the time and overlaps well."""

    def write(job: tuple[Path, str | np.ndarray]) -> None:
        path, content = job
        if isinstance(content, str):
            atomic_write_text(path, content)
        else:
            write_png(path, content)

    with ThreadPoolExecutor(max_workers=min(16, 2 * (os.cpu_count() or 1) + 4)) as pool:
        list(pool.map(write, jobs))


def write_nsvf(scene: Scene, dst: str | Path, overwrite: bool = False) -> None:
    """Write ``scene`` as an NSVF folder ``dst`` (see the module docstring)."""
    order = _check_splits(scene, Path(dst), "NSVF")

    def fill(folder: Path) -> None:
        entries = []  # (stem, image index)
        for split in order:
            idx = [int(i) for i in scene.splits[split]]
            digit = SPLIT_NAMES.index(split)
            entries += [(f"{digit}_{n}", i) for n, i in zip(_file_names([scene.image_names[i] for i in idx]), idx)]
        used = np.array([i for _, i in entries])
        shared = bool((scene.intrinsics[used] == scene.intrinsics[used[0]]).all())
        for sub in ("rgb", "pose") if shared else ("rgb", "pose", "intrinsics"):
            (folder / sub).mkdir()
        jobs: list[tuple[Path, str | np.ndarray]] = _side_files(scene, folder)
        for stem, i in entries:
            jobs.append((folder / "rgb" / f"{stem}.png", scene.images[i]))
            jobs.append((folder / "pose" / f"{stem}.txt", _rows(scene.poses[i] @ OPENCV_TO_OPENGL)))
            if not shared:
                jobs.append((folder / "intrinsics" / f"{stem}.txt", _rows(_k_matrix(scene.intrinsics[i]))))
        if shared:
            jobs.append((folder / "intrinsics.txt", _rows(_k_matrix(scene.intrinsics[used[0]]))))
        _write_files(jobs)

    with atomic_dir(dst, overwrite) as folder:
        fill(folder)


def _k_matrix(intr: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = (float(v) for v in intr)
    return np.array([[fx, 0, cx, 0], [0, fy, cy, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float64)


def write_blender(scene: Scene, dst: str | Path, overwrite: bool = False) -> None:
    """Write ``scene`` as a Blender-format folder ``dst`` (see the module docstring)."""
    order = _check_splits(scene, Path(dst), "Blender")

    def fill(folder: Path) -> None:
        jobs = _side_files(scene, folder)
        for split in order:
            idx = [int(i) for i in scene.splits[split]]
            (folder / split).mkdir()
            frames = []
            for name, i in zip(_file_names([scene.image_names[i] for i in idx]), idx):
                h, w = scene.image_size(i)
                fx, fy, cx, cy = (float(v) for v in scene.intrinsics[i])
                frames.append({
                    "file_path": f"./{split}/{name}",
                    "transform_matrix": scene.poses[i].tolist(),
                    "fl_x": fx, "fl_y": fy, "cx": cx, "cy": cy, "w": w, "h": h,
                })
                jobs.append((folder / split / f"{name}.png", scene.images[i]))
            w0 = scene.image_size(idx[0])[1]
            angle_x = 2.0 * math.atan(0.5 * w0 / float(scene.intrinsics[idx[0], 0]))
            meta = {"camera_angle_x": angle_x, "frames": frames}
            jobs.append((folder / f"transforms_{split}.json", json.dumps(meta, indent=2) + "\n"))
        _write_files(jobs)

    with atomic_dir(dst, overwrite) as folder:
        fill(folder)


def convert_scene(src: str | Path, dst: str | Path, to: str, overwrite: bool = False) -> None:
    """Load ``src`` (any supported format) and write it to ``dst`` in format ``to``.

    Raises:
        KiloNerfError: unknown ``to``, ``dst`` exists without ``overwrite``, ``dst`` would
            replace the source, or the scene cannot be written in that format.
        SceneError: ``src`` cannot be loaded.
    """
    if to not in WRITE_FORMATS:
        raise KiloNerfError(f"unknown output format {to!r} (choose from {', '.join(WRITE_FORMATS)})")
    src_abs, dst_abs = Path(src).resolve(), Path(dst).resolve()
    if (Path(dst).exists() or Path(dst).is_symlink()) and not overwrite:
        raise KiloNerfError(f"{dst}: already exists (pass --overwrite to replace it)")
    if src_abs == dst_abs or dst_abs in src_abs.parents:
        raise KiloNerfError(f"{dst}: would replace the source scene {src}; choose another destination")
    scene = load_scene(src, scene_type="object")  # written out in world space
    (write_nsvf if to == "nsvf" else write_blender)(scene, dst, overwrite=overwrite)
