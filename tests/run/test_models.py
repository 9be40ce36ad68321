"""Loading a trained run's models for rendering: the teacher's field alone, no trainer and no
optimiser, rendering exactly as its trainer does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kilonerf.data.load import load_scene
from kilonerf.io import atomic_torch_save, safe_torch_load
from kilonerf.run.folder import RunDir
from kilonerf.run.models import load_run_scene, load_student_renderer, run_teacher
from kilonerf.train.nerf_teacher import NeRFTeacherTrainer
from kilonerf.train.config import NeRFTeacherConfig
from kilonerf.train.teacher import load_teacher, make_teacher
from tests.helpers.runs import write_sphere_run

pytestmark = pytest.mark.usefixtures("one_thread")


def _rays(n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1) * 4.0
    dirs = torch.nn.functional.normalize(-origins + 0.3 * torch.randn(n, 3, generator=gen), dim=-1)
    return origins, dirs


def _no_optimisers(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an optimiser was built to render")

    monkeypatch.setattr(torch.optim, "Adam", refuse)


def test_fast_teacher_renders_from_its_field_alone(trained_run: Path, tiny_scene: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    run, scene, cpu = RunDir(trained_run), load_scene(tiny_scene), torch.device("cpu")
    cfg = run.read_config()
    with monkeypatch.context() as m:
        _no_optimisers(m)
        teacher = run_teacher(run, cfg, scene, cpu)
    trainer = make_teacher("fast", scene, cfg.teacher_params, cpu)
    trainer.load_state_dict(safe_torch_load(run.stage_checkpoint("teacher"))["trainable"])
    o, d = _rays()
    assert torch.equal(teacher.render_rays(o, d), trainer.render_rays(o, d))


def test_nerf_teacher_renders_from_its_field_alone(tiny_scene: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    scene, cpu = load_scene(tiny_scene), torch.device("cpu")
    config = NeRFTeacherConfig(num_samples=16, width=16, depth=6, dir_width=8, seed=4)
    trainer = NeRFTeacherTrainer(scene, config, cpu)
    with torch.no_grad():
        for p in trainer.field.parameters():
            p.add_(0.1 * torch.randn_like(p))  # not the initial weights: the file must carry them
    path = tmp_path / "teacher.pt"
    atomic_torch_save(path, {"trainable": trainer.state_dict()})
    params = {k: v for k, v in config.__dict__.items()}
    with monkeypatch.context() as m:
        _no_optimisers(m)
        teacher = load_teacher(path, scene, "nerf", params, cpu)
    o, d = _rays()
    assert torch.equal(teacher.render_rays(o, d), trainer.render_rays(o, d))


def test_student_renders_with_the_runs_render_samples(tmp_path: Path) -> None:
    run = RunDir(write_sphere_run(tmp_path))
    meta = run.read_meta()
    meta["config"]["finetune"]["render_samples"] = 40
    run.write_meta({k: v for k, v in meta.items() if k not in ("run_format", "kilonerf_version")})
    scene = load_run_scene(run)
    renderer = load_student_renderer(run, scene, torch.device("cpu"))
    assert renderer.num_samples == 40
    assert renderer.step(renderer.field_rays(*_rays(4))) == pytest.approx((scene.far - scene.near) / 39)
    assert load_student_renderer(run, scene, torch.device("cpu"), num_samples=64).num_samples == 64
