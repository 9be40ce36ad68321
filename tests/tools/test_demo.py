"""`kilonerf demo` end to end at tiny settings: summary, report, resume, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from kilonerf.cli import main
from tests.helpers.runs import TINY_TRAIN as TINY

pytestmark = pytest.mark.slow  # whole pipelines: minutes, not seconds


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("demo") / "d"
    assert main(["demo", "--out", str(out), "--size", "16", "--device", "cpu", *TINY]) == 0
    return out


def test_demo_writes_summary_report_and_run(demo_dir: Path) -> None:
    summary = json.loads((demo_dir / "summary.json").read_text())
    for model in ("teacher", "student"):
        for key in ("psnr", "ssim", "lpips", "ms_per_frame"):
            assert key in summary[model]
        assert math.isfinite(summary[model]["psnr"]) and summary[model]["ms_per_frame"] > 0
    assert summary["speedup_over_nerf"] > 0
    assert (demo_dir / "report.html").is_file()
    assert (demo_dir / "student.pt").is_file() and (demo_dir / "scene" / "transforms_test.json").is_file()
    metrics = json.loads((demo_dir / "eval" / "student_test" / "metrics.json").read_text())
    assert metrics["views"] == 50


def test_demo_rerun_resumes_without_training(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (demo_dir / "student.pt").stat().st_mtime_ns
    assert main(["demo", "--out", str(demo_dir), "--size", "16", "--device", "cpu"]) == 0
    assert (demo_dir / "student.pt").stat().st_mtime_ns == before
    out = capsys.readouterr().out
    assert "report:" in out and "faster than NeRF" in out


def test_demo_refuses_a_foreign_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--out", str(tmp_path), "--size", "16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a kilonerf run" in err
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "scene").exists()
