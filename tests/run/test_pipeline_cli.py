"""End to end at tiny settings: `kilonerf train` through every stage, `kilonerf eval`, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kilonerf.cli import main
from kilonerf.data.convert import convert_scene


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


def test_eval_with_data_in_another_format(trained_run: Path, tiny_scene: Path, tmp_path: Path) -> None:
    """--data may hold the same scene in another format: same views, same scores, and the
    evaluation records which model and which folder it used."""
    nsvf = tmp_path / "as_nsvf"
    convert_scene(tiny_scene, nsvf, to="nsvf")
    scores = {}
    for data in (tiny_scene, nsvf):
        out = tmp_path / f"{data.name}.json"
        argv = ["eval", str(trained_run), "--model", "teacher", "--split", "test", "--data", str(data), "--json", str(out)]
        assert main([*argv, "--device", "cpu"]) == 0
        saved = json.loads((trained_run / "eval" / "teacher_test" / "metrics.json").read_text())
        assert saved["model"] == "teacher" and Path(saved["data"]) == data.resolve()
        pngs = {p.stem for p in (trained_run / "eval" / "teacher_test").glob("*.png")}
        assert len(pngs) == 2 and pngs == {r["name"] for r in saved["images"]}  # the old renders were replaced
        scores[data.name] = [r["psnr"] for r in json.loads(out.read_text())["images"]]
    assert scores["as_nsvf"] == pytest.approx(scores["proc"], abs=1e-4)


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


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "{tmp}"], "not a scene folder"),
        (["--split", "nope"], "no 'nope' split"),
        (["--model", "student", "--remove", "student.pt"], "--stage finetune"),
        (["--remove", "run.json"], "run.json missing"),
    ],
)
def test_eval_errors_leave_no_output(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("eval"))
    argv = [a.format(tmp=tmp_path) for a in args]
    if "--remove" in argv:  # not an option: delete that file of the run first
        k = argv.index("--remove")
        (run / argv[k + 1]).unlink()
        del argv[k : k + 2]
    assert main(["eval", str(run), "--device", "cpu", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kilonerf: error:") and "\n" not in err and message in err, err
    assert not (run / "eval").exists()


def test_eval_backends_agree(trained_run: Path, tmp_path: Path, cpu_backend: object) -> None:
    # cpu_backend: built (or skipped without a compiler), so 'cpu' below is not a silent fallback.
    psnrs = {}
    for backend in ("cpu", "torch_ref"):
        out = tmp_path / f"{backend}.json"
        assert main(["eval", str(trained_run), "--split", "test", "--json", str(out), "--backend", backend]) == 0
        psnrs[backend] = json.loads(out.read_text())["psnr"]
    assert abs(psnrs["cpu"] - psnrs["torch_ref"]) <= 0.01


def test_bench_table(trained_run: Path, tiny_scene: Path, capsys: pytest.CaptureFixture[str], cpu_backend: object) -> None:
    from kilonerf.bench import format_bench, run_bench
    from kilonerf.data.load import load_scene
    from kilonerf.run.folder import RunDir

    result = run_bench(RunDir(trained_run), load_scene(tiny_scene), resolution=24, views=1, nerf_rays=8,
                       ess_rays=64, matmul_size=256)  # fmt: skip
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["NeRF", "NeRF + ESS + ERT", "KiloNeRF"]
    assert rows["NeRF"]["speedup"] == 1.0 and rows["NeRF"]["samples_per_ray"] == 384
    assert all(r["ms_per_frame"] > 0 for r in rows.values())
    assert 0 < rows["KiloNeRF"]["samples_per_ray"] < 384 and rows["KiloNeRF"]["speedup"] > 1
    assert result["resolution"] == [24, 24] and result["samples_per_s"] > 0 and result["peak_fraction"] > 0
    assert result["psnr"]["diff_db"] <= 0.01
    text = format_bench(result)
    assert "KiloNeRF" in text and "of the measured fp32 matrix-product rate" in text


def test_bench_rejects_bad_arguments(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", str(trained_run), "--resolution", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resolution must be >= 1" in err and "\n" not in err


def test_usage_errors_are_one_line_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["eval", "somewhere", "--max-views", "0"], ["procedural", "x", "--size", "0"], ["train"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert info.value.code == 2 and "\n" not in err and "error:" in err, err
