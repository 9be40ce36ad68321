"""Format detection and the one ``load_scene`` entry point (the loaders' shared file readers
are in ``kilonerf/data/files.py``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kilonerf.data.files import SCENE_TYPE_FILE, read_scene_type
from kilonerf.data.scene import SPLIT_NAMES, Scene
from kilonerf.data.resize import downscale_scene, scale_factor
from kilonerf.data.scene_types import apply_scene_type
from kilonerf.errors import SceneError



def detect_format(path: str | Path) -> str:
    """The format of scene folder ``path``: ``"blender" | "nsvf" | "llff" | "ngp"``.

    Checked in this order: ``transforms_{train,val,test}.json`` -> blender,
    ``transforms.json`` -> ngp, ``poses_bounds.npy`` -> llff, ``rgb/`` + ``pose/`` -> nsvf.
    """
    root = Path(path)
    if not root.exists():
        raise SceneError(root, "scene folder not found")
    if not root.is_dir():
        raise SceneError(root, "not a folder (a scene is a folder)")
    if any((root / f"transforms_{s}.json").is_file() for s in SPLIT_NAMES):
        return "blender"
    if (root / "transforms.json").is_file():
        return "ngp"
    if (root / "poses_bounds.npy").is_file():
        return "llff"
    if (root / "rgb").is_dir() and (root / "pose").is_dir():
        return "nsvf"
    raise SceneError(
        root,
        "not a scene folder: expected transforms_{train,val,test}.json (Blender), transforms.json "
        "(instant-ngp), poses_bounds.npy (LLFF) or rgb/ + pose/ (NSVF)",
    )


def load_scene(
    path: str | Path,
    splits: Sequence[str] | None = None,
    background: Sequence[float] | np.ndarray | None = None,
    scene_type: str = "auto",
    downscale: float | None = None,
    max_size: int | None = None,
) -> Scene:
    """Load a scene folder of any supported format (detected automatically).

    Args:
        path: the scene folder.
        splits: split names to load (``"train"``, ``"val"``, ``"test"``); None loads every
            split present. Images of other splits are not decoded.
        background: (3,) RGB in [0, 1] to composite RGBA images onto; None uses the folder's
            ``background_color.txt`` or the format's default.
        scene_type: ``auto`` (the folder's ``scene_type.txt`` when it has one, as ``kilonerf
            process`` writes it, else detected from the cameras), ``object``, ``forward`` or
            ``unbounded`` (:func:`~kilonerf.data.scene_types.apply_scene_type`).
        downscale, max_size: divide image sizes by ``downscale`` and/or until the longest side
            is at most ``max_size`` pixels (:func:`~kilonerf.data.resize.scale_factor`).
    Returns:
        A :class:`Scene` in the project's conventions (see ``kilonerf/data/scene.py``).
    """
    fmt = detect_format(path)
    if fmt == "blender":
        from kilonerf.data.blender import load_blender as loader
    elif fmt == "nsvf":
        from kilonerf.data.nsvf import load_nsvf as loader
    elif fmt == "llff":
        from kilonerf.data.llff import load_llff as loader
    else:
        from kilonerf.data.ngp import load_ngp as loader
    scene = check_scene_numbers(loader(path, splits=splits, background=background), Path(path))
    if downscale is not None or max_size is not None:
        sizes = [scene.image_size(i) for i in range(len(scene))]
        scene = downscale_scene(scene, scale_factor(sizes, downscale, max_size))
    if scene_type == "auto" and (Path(path) / SCENE_TYPE_FILE).is_file():
        scene_type = read_scene_type(Path(path) / SCENE_TYPE_FILE)
    return apply_scene_type(scene, scene_type)


def check_scene_numbers(scene: Scene, root: Path) -> Scene:
    """``scene`` if every camera and bound it was given is finite and usable: numbers that
    parse but overflow (1e308 in a pose, a focal length of 0) fail here, naming the image."""
    names = scene.image_names or [str(k) for k in range(len(scene.images))]
    for k, name in enumerate(names):
        if not np.isfinite(scene.poses[k]).all():
            raise SceneError(root, f"image '{name}': its camera pose is not finite")
        if not np.isfinite(scene.intrinsics[k]).all() or not (scene.intrinsics[k, :2] > 0).all():
            raise SceneError(root, f"image '{name}': its intrinsics are not finite with positive focal lengths")
    if not np.isfinite(scene.bbox).all() or not (scene.bbox[1] > scene.bbox[0]).all():
        raise SceneError(root, f"the scene box is not finite with min < max: {scene.bbox.tolist()}")
    if not (math.isfinite(scene.near) and math.isfinite(scene.far) and 0 <= scene.near < scene.far):
        raise SceneError(root, f"near/far {scene.near}, {scene.far} (from the cameras and the box) are not finite "
                         "with 0 <= near < far")  # fmt: skip
    return scene
