"""The paper's NeRF teacher: architecture, presets, a short training run, checkpoint state."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kilonerf.data.rays import RayTable
from kilonerf.errors import KiloNerfError, RunError
from kilonerf.fields.nerf import NeRFField
from kilonerf.io import atomic_torch_save
from kilonerf.train.loop import run_training
from kilonerf.train.config import LoopConfig, NeRFTeacherConfig
from kilonerf.train.nerf_teacher import NeRFTeacherTrainer
from tests.helpers.toy_scenes import sphere_scene

# Tiny tensors: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


TINY = dict(rays_per_step=32, num_samples=16, width=32, dir_width=16, lr=5e-3, precrop_steps=0)


def test_paper_network_shape_and_parameter_count() -> None:
    field = NeRFField()
    # Trunk: 63->256, 5 x 256->256, (256+63)->256 after the skip, 256->256; heads:
    # sigma 256->1, feature 256->256, (256+27)->128, 128->3.
    trunk = (63 * 256 + 256) + 6 * (256 * 256 + 256) + (319 * 256 + 256)
    heads = 257 + (256 * 256 + 256) + (283 * 128 + 128) + (128 * 3 + 3)
    assert sum(p.numel() for p in field.parameters()) == trunk + heads == 595_844
    assert [layer.in_features for layer in field.trunk] == [63, 256, 256, 256, 256, 319, 256, 256]
    assert field.dir_layer.in_features == 283 and field.rgb_head.out_features == 3


def test_field_outputs_follow_the_protocol() -> None:
    torch.manual_seed(0)
    field = NeRFField(width=32, dir_width=16, density_bias=0.1)
    pts = torch.rand(200, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    sigma, rgb = field(pts, dirs)
    assert sigma.shape == (200,) and rgb.shape == (200, 3)
    assert bool((sigma >= 0).all()) and bool(((rgb > 0) & (rgb < 1)).all())
    torch.testing.assert_close(field.density(pts), sigma)
    torch.testing.assert_close(torch.relu(field.raw_density(pts)), sigma)
    sigma2, rgb2 = field(pts, -dirs)
    assert torch.equal(sigma2, sigma)  # density ignores the view direction ...
    assert not torch.allclose(rgb2, rgb)  # ... colour does not


def test_presets() -> None:
    paper = NeRFTeacherConfig.preset("paper")
    assert (paper.num_samples, paper.rays_per_step, paper.iterations) == (384, 1024, 600_000)
    trainer = NeRFTeacherTrainer(sphere_scene(size=8), NeRFTeacherConfig.preset("cpu"))
    assert trainer.lr_at(0) == pytest.approx(trainer.config.lr)
    t = NeRFTeacherTrainer.__new__(NeRFTeacherTrainer)
    t.config = paper
    assert t.lr_at(500_000) == pytest.approx(5e-5) and t.lr_at(250_000) == pytest.approx(5e-4 * 0.1**0.5)
    cpu = NeRFTeacherConfig.preset("cpu", iterations=7)
    assert cpu.iterations == 7 and cpu.num_samples < paper.num_samples
    assert paper.loop_config().max_steps == 600_000 and paper.loop_config().precrop_steps == 10_000
    with pytest.raises(KiloNerfError, match="unknown teacher preset"):
        NeRFTeacherConfig.preset("huge")


def test_loss_decreases_on_a_tiny_scene(tmp_path: Path) -> None:
    scene = sphere_scene(radius=0.9, flat=(0.1, 0.2, 0.9))
    trainer = NeRFTeacherTrainer(scene, NeRFTeacherConfig.preset("cpu", **TINY))
    cfg = LoopConfig(max_steps=25, log_every=1, ckpt_every=1000, progress=False)
    result = run_training(trainer, RayTable(scene, "train"), None, cfg, tmp_path / "t.pt", "teacher")
    losses = [r["loss"] for r in result.history]
    assert len(losses) == 25
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)  # measured ratios 0.3-0.5 over seeds
    assert trainer.step == 25


def test_rays_missing_the_box_render_background() -> None:
    scene = sphere_scene(size=8)
    scene.background = torch.tensor([0.2, 0.3, 0.4]).numpy()
    trainer = NeRFTeacherTrainer(scene, NeRFTeacherConfig.preset("cpu", **TINY))
    origins = torch.tensor([[5.0, 5.0, 5.0], [0.0, 0.0, 3.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # both point away from the box
    torch.testing.assert_close(trainer.render_rays(origins, dirs), torch.tensor([[0.2, 0.3, 0.4]] * 2))
    inside = trainer.render_rays(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert not torch.allclose(inside, torch.tensor([[0.2, 0.3, 0.4]]))  # initial fog is visible


def test_state_dict_round_trip_weights_only(tmp_path: Path) -> None:
    scene = sphere_scene(size=8)
    cfg = NeRFTeacherConfig.preset("cpu", **TINY)
    a = NeRFTeacherTrainer(scene, cfg)
    table = RayTable(scene, "train")
    o, d, rgb = table.sample(32, torch.Generator().manual_seed(0))
    a.train_step(0, o, d, rgb)
    atomic_torch_save(tmp_path / "s.pt", a.state_dict())
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    b = NeRFTeacherTrainer(scene, dataclasses.replace(cfg, seed=5))
    b.load_state_dict(state)
    assert b.step == 1
    torch.testing.assert_close(b.render_rays(o, d), a.render_rays(o, d), rtol=0, atol=0)
    # Same next step, jitter included.
    la, lb = a.train_step(1, o, d, rgb)["loss"], b.train_step(1, o, d, rgb)["loss"]
    assert torch.equal(la, lb)
    with pytest.raises(RunError, match="width"):
        NeRFTeacherTrainer(scene, dataclasses.replace(cfg, width=16)).load_state_dict(state)
