"""`kilonerf train` interrupted inside a stage (Ctrl-C) resumes from that stage's last checkpoint.

The trainers' own resume tests show a restored run is bit-identical; these check the same
through the command and the run directory: the rerun trains only the steps after the
checkpoint, and the final student equals the one of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from kilonerf.cli import main
from kilonerf.io import safe_torch_load
from kilonerf.train.distill import DistillTrainer
from kilonerf.train.fast_teacher import FastTeacherTrainer
from kilonerf.train.finetune import FinetuneTrainer

from tests.helpers.runs import TINY_TRAIN

pytestmark = pytest.mark.slow  # whole pipelines: minutes, not seconds

# stage -> (trainer class, extra settings, step the interruption hits, checkpointed step, max steps).
# TINY_TRAIN's teacher checkpoints every 5 of its 15 steps; the two student stages get a
# checkpoint every 2 of their 3 steps (checkpoint frequency does not change the arithmetic).
CASES: dict[str, tuple[type, list[str], int, int, int]] = {
    "teacher": (FastTeacherTrainer, [], 7, 5, 15),
    "distill": (DistillTrainer, ["--set", "distill_loop.ckpt_every=2"], 2, 2, 3),
    "finetune": (FinetuneTrainer, ["--set", "finetune_loop.ckpt_every=2"], 2, 2, 3),
}


def _wrap_train_step(monkeypatch: pytest.MonkeyPatch, cls: type, before: Callable[[int], None]) -> None:
    original = cls.train_step

    def train_step(self: Any, step: int, *args: Any) -> Any:
        before(step)
        return original(self, step, *args)

    monkeypatch.setattr(cls, "train_step", train_step)


def _student_state(run: Path) -> dict[str, torch.Tensor]:
    return safe_torch_load(run / "student.pt")["state"]


@pytest.mark.parametrize("stage", list(CASES))
def test_interrupted_stage_resumes_from_its_checkpoint(
    stage: str, tiny_scene: Path, trained_run: Path, tmp_path: Path, one_thread: None,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    cls, extra, stop_at, saved, max_steps = CASES[stage]
    run = tmp_path / "run"
    args = ["train", str(tiny_scene), "--out", str(run), "--device", "cpu", *TINY_TRAIN, *extra]

    def interrupt(step: int) -> None:
        if step == stop_at:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        _wrap_train_step(patch, cls, interrupt)
        assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err
    ckpt = run / stage / "checkpoint.pt"
    assert int(safe_torch_load(ckpt)["step"]) == saved
    assert not (run / "student.pt").exists()

    steps: list[int] = []
    with monkeypatch.context() as patch:
        _wrap_train_step(patch, cls, steps.append)
        assert main(["train", "--out", str(run), "--device", "cpu"]) == 0
    assert steps == list(range(saved, max_steps))  # only the steps after the checkpoint

    got, want = _student_state(run), _student_state(trained_run)
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(got[key], want[key]), key
