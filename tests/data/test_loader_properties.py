"""Property-based tests of every reader of user files: scene loaders (Blender, instant-ngp, NSVF,
LLFF), camera-path files and run folders. Hypothesis mutates valid inputs (keys dropped, wrong
types, NaN, huge numbers, truncation, random bytes, paths escaping the folder); the only
exception allowed to escape is the project's own, with a one-line message naming a file.
A fixed example budget and ``derandomize=True`` keep CI reproducible."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from tests.helpers.scenes import llff_folder, make_blender, make_ngp_from_blender, make_nsvf

from kilonerf.data.camera_paths import make_camera_path
from kilonerf.data.load import load_scene
from kilonerf.data.scene import Scene
from kilonerf.errors import KiloNerfError
from kilonerf.run.models import default_model, load_renderer, run_scene_path
from kilonerf.report.sources import gather
from kilonerf.run.folder import RunDir

EXAMPLES = int(os.environ.get("KILONERF_PROPERTY_EXAMPLES", "150"))
"""Examples per test: a fixed budget in CI; raise it locally to search longer."""
PROPERTY = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failing example is already small
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # fmt: skip

BAD_VALUES = st.sampled_from([
    None, True, 0, -1, 2**70, 10**400, 1e308, -1e308, math.nan, math.inf, -math.inf, "", "x", "../../outside.png",
    "/etc/passwd", [], {}, [[1, 2], [3]], [math.nan] * 4, [[math.inf] * 4] * 4, {"a": [1]}, "[" * 3,
])  # fmt: skip

JsonOp = tuple[str, int, int, Any]
"""("json", which JSON file, which node, "delete" | a new value)."""
FileOp = tuple[str, int, str, float, bytes]
"""("file", which file, "truncate" | "garbage" | "delete" | "text", where (0..1), bytes)."""

json_ops = st.tuples(st.just("json"), st.integers(0, 50), st.integers(0, 10_000),
                     st.one_of(st.just("delete"), BAD_VALUES))  # fmt: skip
file_ops = st.tuples(st.just("file"), st.integers(0, 50), st.sampled_from(["truncate", "garbage", "delete", "text"]),
                     st.floats(0, 1), st.binary(min_size=1, max_size=24))  # fmt: skip
NUMBER_TEXT = st.text(alphabet="0123456789-+.e naif\n", max_size=40)
mutations = st.lists(st.one_of(json_ops, file_ops), min_size=1, max_size=4)


def _nodes(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON tree, the root excluded."""
    out = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in items:
        out.append((*prefix, key))
        out.extend(_nodes(value, (*prefix, key)))
    return out


def _apply_json(path: Path, node: int, change: Any) -> None:
    try:
        tree = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return  # already broken by an earlier mutation
    nodes = _nodes(tree)
    if not nodes:
        path.write_text(json.dumps(change))
        return
    *parents, last = nodes[node % len(nodes)]
    holder = tree
    for key in parents:
        holder = holder[key]
    if change == "delete":
        del holder[last]
    else:
        holder[last] = change
    path.write_text(json.dumps(tree))


def _apply_file(path: Path, kind: str, where: float, data: bytes, text: str) -> None:
    content = path.read_bytes()
    at = int(where * len(content))
    if kind == "truncate":
        path.write_bytes(content[:at])
    elif kind == "garbage":
        path.write_bytes(content[:at] + data + content[at + len(data):])
    elif kind == "delete":
        path.unlink()
    else:
        path.write_text(text)


def mutate(root: Path, ops: list[JsonOp | FileOp], text: str) -> None:
    """Apply ``ops`` to the files under ``root`` (chosen by index among the JSON files / all files)."""
    for op in ops:
        files = sorted(p for p in root.rglob("*") if p.is_file())
        if not files:
            return
        if op[0] == "json":
            jsons = [p for p in files if p.suffix == ".json"]
            if jsons:
                _apply_json(jsons[op[1] % len(jsons)], op[2], op[3])
        else:
            _apply_file(files[op[1] % len(files)], op[2], op[3], op[4], text)


def expect_own_error_or_result(root: Path, action: Callable[[], Any], also: str | None = None) -> Any:
    """``action()``'s result, or None when it raised the project's error naming a file under
    ``root`` (or ``also``) in one line; any other exception fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return action()
    except KiloNerfError as exc:
        message = str(exc)
        assert "\n" not in message, message
        assert str(root) in message or (also is not None and also in message), message
        return None


def check_scene(scene: Scene) -> None:
    """What every loaded scene guarantees, however odd its files were."""
    n = len(scene.images)
    assert n > 0 and scene.poses.shape == (n, 4, 4) and scene.intrinsics.shape == (n, 4)
    assert np.isfinite(scene.poses).all() and np.isfinite(scene.intrinsics).all()
    assert (scene.intrinsics[:, :2] > 0).all()
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in scene.images)
    assert np.isfinite(scene.bbox).all() and (scene.bbox[1] > scene.bbox[0]).all()
    assert math.isfinite(scene.near) and math.isfinite(scene.far) and 0 <= scene.near < scene.far


@contextmanager
def copy_of(template: Path) -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "scene"
        shutil.copytree(template, root)
        yield root


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("templates")
    blender = make_blender(base / "blender", splits={"train": 2, "val": 1})
    ngp = base / "ngp"
    make_ngp_from_blender(make_blender(base / "src", splits={"train": 2}, size=(100, 100)), ngp, 2)
    return {"blender": blender, "ngp": ngp, "nsvf": make_nsvf(base / "nsvf"), "llff": llff_folder(base / "llff")}


@pytest.mark.parametrize("fmt", ["blender", "ngp", "nsvf", "llff"])
@PROPERTY
@given(ops=mutations, text=NUMBER_TEXT)
def test_scene_loaders_raise_only_their_own_errors(templates: dict[str, Path], fmt: str, ops: list, text: str) -> None:
    with copy_of(templates[fmt]) as root:
        mutate(root, ops, text)
        scene = expect_own_error_or_result(root, lambda: load_scene(root))
        if scene is not None:
            check_scene(scene)


@PROPERTY
@given(ops=st.lists(json_ops, min_size=1, max_size=4))
def test_camera_path_files_raise_only_their_own_errors(templates: dict[str, Path], ops: list) -> None:
    scene = load_scene(templates["blender"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        frame = {"transform_matrix": np.eye(4).tolist(), "fx": 5.0}
        (root / "path.json").write_text(json.dumps({"width": 8, "height": 6, "fx": 4.0, "frames": [frame, frame]}))
        mutate(root, ops, "")
        path = expect_own_error_or_result(root, lambda: make_camera_path(str(root / "path.json"), scene, None, None))
        if path is not None:
            assert path.width >= 1 and path.height >= 1 and len(path) >= 1
            assert np.isfinite(path.poses).all() and np.isfinite(path.intrinsics).all()
            assert (path.intrinsics[:, :2] > 0).all()


def _use_run(run: RunDir) -> None:
    """What the commands read of a run before rendering: run.json, the scene path, both
    models with their occupancy grid, and everything the report gathers."""
    run.read_meta()
    run_scene_path(run)
    scene = load_scene(run_scene_path(run), splits=["test"])
    for model in {default_model(run), "teacher"}:
        render = load_renderer(run, model, scene, torch.device("cpu"), num_samples=8)
        origins, dirs = torch.zeros(2, 3), torch.nn.functional.normalize(torch.ones(2, 3), dim=-1)
        assert render(origins, dirs).shape == (2, 3)
    gather(run)


@pytest.fixture(scope="module")
def run_template(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run with a small evaluation and summary (the JSON files a report reads)."""
    run = tmp_path_factory.mktemp("run_template") / "run"
    shutil.copytree(trained_run, run)
    metrics = {"model": "student", "psnr": 10.0, "images": [{"name": "r_0", "psnr": 10.0, "lpips": None}]}
    (run / "eval" / "student_test").mkdir(parents=True, exist_ok=True)
    (run / "eval" / "student_test" / "metrics.json").write_text(json.dumps(metrics))
    (run / "summary.json").write_text(json.dumps({"student": {"ms_per_frame": 3.0}, "speedup_over_nerf": 10.0}))
    return run


@PROPERTY
@given(ops=mutations, text=NUMBER_TEXT)
def test_run_folders_raise_only_their_own_errors(run_template: Path, ops: list, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "run"
        shutil.copytree(run_template, root)
        mutate(root, ops, text)
        try:
            data = json.loads((root / "run.json").read_text()).get("data")
        except (OSError, ValueError, RecursionError, AttributeError):
            data = None
        # An error about the scene names the folder run.json points to, outside the run.
        expect_own_error_or_result(root, lambda: _use_run(RunDir(root)), also=str(data) if data is not None else None)
