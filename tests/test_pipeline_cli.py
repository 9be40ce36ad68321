"""End to end at tiny settings: `kilonerf train` through every stage, `kilonerf eval`, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kilonerf.cli import main
from kilonerf.data.procedural import write_procedural_scene

TINY = [
    "--set", "teacher_params.total_steps=15", "--set", "teacher_loop.max_steps=15",
    "--set", "teacher_params.rays_per_step=256", "--set", "teacher_loop.val_views=1",
    "--set", "teacher_loop.ckpt_every=5",
    "--set", "occupancy.resolution_factor=2", "--set", "student.max_res=4", "--set", "occupancy.sigma_threshold=0",
    "--set", "distill_loop.max_steps=3", "--set", "distill_loop.val_views=0",
    "--set", "finetune_loop.max_steps=3", "--set", "finetune_loop.val_views=1",
    "--set", "finetune.rays_per_step=64", "--set", "finetune.num_samples=32", "--set", "finetune.render_samples=32",
    "--set", "distill.render_samples=32",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_procedural_scene(tmp_path_factory.mktemp("scene") / "proc", size=16, n_train=6, n_val=2, n_test=2)


@pytest.fixture(scope="module")
def trained_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", str(tiny_scene), "--out", str(run), "--device", "cpu", *TINY]) == 0
    return run


def test_train_writes_every_stage_output(trained_run: Path) -> None:
    for name in ("run.json", "teacher/checkpoint.pt", "occupancy.npz", "student_distilled.pt", "student.pt", "stages.json"):
        assert (trained_run / name).is_file(), name
    stages = json.loads((trained_run / "stages.json").read_text())
    assert set(stages) == {"teacher", "occupancy", "distill", "finetune"}
    assert stages["teacher"]["steps"] == 15
    meta = json.loads((trained_run / "run.json").read_text())
    assert meta["config"]["teacher_loop"]["max_steps"] == 15  # the resolved config is saved


def test_rerun_skips_finished_stages(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (trained_run / "student.pt").stat().st_mtime_ns
    assert main(["train", "--out", str(trained_run), "--device", "cpu"]) == 0
    assert "[finetune] already done" in capsys.readouterr().out
    assert (trained_run / "student.pt").stat().st_mtime_ns == before


def test_eval_student_and_teacher(trained_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    assert main(["eval", str(trained_run), "--split", "test", "--json", str(out), "--device", "cpu"]) == 0
    result = json.loads(out.read_text())
    assert result["model"] == "student"
    for key in ("psnr", "ssim", "ssim_skimage", "lpips", "ms_per_frame"):
        assert key in result
    assert len(result["images"]) == 2 and result["psnr"] > 5.0
    assert (trained_run / "eval" / "student_test" / "metrics.json").is_file()
    assert main(["eval", str(trained_run), "--model", "teacher", "--device", "cpu"]) == 0


def test_eval_on_a_split_stored_elsewhere(trained_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    other = tmp_path / "only_test"
    other.mkdir()
    (other / "transforms_test.json").write_text((tiny_scene / "transforms_test.json").read_text())
    (other / "test").symlink_to(tiny_scene / "test")
    out = tmp_path / "m.json"
    assert main(["eval", str(trained_run), "--data", str(other), "--split", "test", "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["images"]) == 2


@pytest.mark.parametrize(
    "argv_fn, message",
    [
        (lambda d, r: ["train", str(d / "missing"), "--out", str(r / "x")], "missing"),
        (lambda d, r: ["eval", str(r / "nope")], "run directory not found"),
        (lambda d, r: ["train", str(d), "--out", str(r / "y"), "--stage", "distill"], "occupancy"),
        (lambda d, r: ["train", str(d), "--out", str(r / "z"), "--set", "bogus.key=1"], "unknown setting"),
    ],
)
def test_errors_are_one_line_exit_2(
    tiny_scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_fn, message: str
) -> None:
    assert main(argv_fn(tiny_scene, tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kilonerf: error:") and "\n" not in err and message in err


def test_existing_run_rejects_other_preset(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(trained_run), "--preset", "paper"]) == 2
    assert "preset" in capsys.readouterr().err
