"""Distillation: the loss goes down, occupied-only sampling, streaming, resume, configs."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from tests.helpers.fields import SphereField, ball_occupancy, corner_occupancy
from kilonerf.errors import KiloNerfError
from kilonerf.fields.multinet import MultiNetField
from kilonerf.settings import SettingError
from kilonerf.train.distill import DistillTrainer, RowAdam
from kilonerf.train.config import DistillConfig, LoopConfig
from kilonerf.train.loop import run_training

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


# Tiny tensors: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


def trainer(**kw: object) -> DistillTrainer:
    occ = kw.pop("occupancy", None)
    cfg = DistillConfig(**{"iterations": 30, "points_per_net": 128, "eval_points_per_net": 512, **kw})  # type: ignore[arg-type]
    return DistillTrainer(SphereField(), MultiNetField(BOX, res=(2, 2, 2)), occ, cfg, ref_step=0.0211)


def params(t: DistillTrainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in t.student.parameters()]


def test_heldout_loss_goes_down() -> None:
    t = trainer(lr=3e-3)
    before = t.heldout_metrics()
    assert t.heldout_metrics() == before  # the held-out set is fixed
    out = {}
    for step in range(30):
        out = t.train_step(step, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3))
    after = t.heldout_metrics()
    assert after["loss"] < 0.6 * before["loss"], (before, after)
    assert after["rgb_mse"] < before["rgb_mse"]
    assert set(out) >= {"loss", "psnr", "rgb_mse", "alpha_mse"}
    assert float(out["psnr"]) == pytest.approx(-10 * torch.log10(out["rgb_mse"]).item())


def test_occupied_only_skips_empty_networks() -> None:
    t = trainer(occupied_only=True, occupancy_dilation=0, occupancy=corner_occupancy(BOX, 8), points_per_net=64)
    assert t.active.tolist() == [0]  # only the (-, -, -) cell holds occupied voxels
    local, world, _ = t.sampler.sample(t.active, 400, 0.75, torch.Generator().manual_seed(0))
    # 75% of the points are drawn in the occupied corner (an eighth of the cell), the rest
    # uniformly in the cell, landing there 1/8 of the time.
    inside = (world[0] < -0.5).all(-1).float().mean()
    assert 0.75 <= float(inside) <= 0.75 + 0.25 * 0.25
    assert bool((local.abs() <= 1.0).all())
    before = params(t)
    t.train_step(0, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3))
    for p0, p1 in zip(before, t.student.parameters()):
        assert not torch.equal(p0[0], p1[0])
        assert torch.equal(p0[1:], p1[1:].detach())


def test_sampler_points_lie_in_their_cells() -> None:
    t = trainer(occupied_only=True, occupancy=ball_occupancy(BOX, 16, 0.7))
    nets = torch.arange(8)
    local, world, dirs = t.sampler.sample(nets, 300, 0.75, torch.Generator().manual_seed(1))
    located, loc2 = t.student.grid.locate(world.reshape(-1, 3))
    assert torch.equal(located, nets.repeat_interleave(300))
    torch.testing.assert_close(loc2, local.reshape(-1, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(8, 300))


def test_round_robin_trains_only_the_window() -> None:
    t = trainer(nets_per_step=3)
    assert t.nets_for_step(0).tolist() == [0, 1, 2]
    assert t.nets_for_step(2).tolist() == [6, 7, 0]
    before = params(t)
    t.train_step(2, torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3))
    changed = [not torch.equal(before[0][k], t.student.weights[0][k].detach()) for k in range(8)]
    assert changed == [True, False, False, False, False, False, True, True]
    assert t.optimizer.steps.tolist() == [1, 0, 0, 0, 0, 0, 1, 1]


def test_row_adam_matches_torch_adam() -> None:
    """All rows: plain Adam. A subset of rows: Adam on those rows alone, the rest untouched."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 4, 3, generator=gen, requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    row, ref = RowAdam([a], lr=1e-2), torch.optim.Adam([b], lr=1e-2)
    for _ in range(3):
        g = torch.randn(5, 4, 3, generator=gen)
        a.grad, b.grad = g.clone(), g.clone()
        row.step(torch.arange(5))
        ref.step()
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    sub = a.detach()[[1, 3]].clone().requires_grad_(True)
    row_sub = RowAdam([a], lr=1e-2)
    ref_sub = torch.optim.Adam([sub], lr=1e-2)
    untouched = a.detach()[[0, 2, 4]].clone()
    for _ in range(3):
        g = torch.randn(5, 4, 3, generator=gen)
        a.grad, sub.grad = g.clone(), g[[1, 3]].clone()
        row_sub.step(torch.tensor([1, 3]))
        ref_sub.step()
    torch.testing.assert_close(a.detach()[[1, 3]], sub.detach(), atol=1e-6, rtol=1e-5)
    assert torch.equal(a.detach()[[0, 2, 4]], untouched)


def test_chunking_does_not_change_the_step() -> None:
    """Streaming in small chunks accumulates exactly the gradient of one big chunk."""
    small, big = trainer(chunk_points=128), trainer(chunk_points=1 << 16)
    table = small.sampler.sample(torch.arange(8), 128, 0.0, torch.Generator().manual_seed(3))

    def fixed(nets: torch.Tensor, per_net: int, frac: float, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        return tuple(x[nets] for x in table)

    small.sampler.sample = fixed  # type: ignore[method-assign]
    big.sampler.sample = fixed  # type: ignore[method-assign]
    assert len(small._chunks(small.active, 128)) == 8 and len(big._chunks(big.active, 128)) == 1
    e = torch.zeros(0, 3)
    o1, o2 = small.train_step(0, e, e, e), big.train_step(0, e, e, e)
    torch.testing.assert_close(o1["loss"], o2["loss"])
    for p, q in zip(small.student.parameters(), big.student.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


MEMORY_SCRIPT = """
import json, resource, sys, torch
sys.path.insert(0, sys.argv[1])
torch.set_num_threads(1)
from tests.helpers.fields import SphereField
from kilonerf.fields.multinet import MultiNetField
from kilonerf.train.config import DistillConfig
from kilonerf.train.distill import DistillTrainer
box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
student = MultiNetField(box, res=(16, 16, 16))
t = DistillTrainer(SphereField(), student, None, DistillConfig(points_per_net=16, chunk_points=1 << 14))
e = torch.zeros(0, 3)
t.train_step(0, e, e, e)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t.train_step(1, e, e, e)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "nets": int(t.nets_for_step(0).numel())}))
"""


@pytest.mark.slow
def test_distillation_memory_is_bounded() -> None:
    """16^3 networks, all trained each step: the process stays far below 4 GB and does not
    grow after the first step (samples are streamed, never accumulated)."""
    repo = str(Path(__file__).resolve().parents[2])
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, repo], capture_output=True, text=True, check=True)
    stats = json.loads(out.stdout.strip().splitlines()[-1])
    assert stats["nets"] == 4096
    assert stats["peak_mb"] < 4096, stats
    assert stats["peak_mb"] - stats["base_mb"] < 256, stats


def test_resume_is_bit_identical(tmp_path: Path) -> None:
    cfg = LoopConfig(max_steps=6, ckpt_every=3, log_every=1, progress=False)
    straight = trainer()
    run_training(straight, None, None, cfg, tmp_path / "a.pt", "distill")
    first = trainer()
    run_training(first, None, None, LoopConfig(**{**asdict(cfg), "max_steps": 3}), tmp_path / "b.pt", "distill")
    resumed = trainer()
    result = run_training(resumed, None, None, cfg, tmp_path / "b.pt", "distill")
    assert result.resumed_from == 3
    for p, q in zip(straight.student.parameters(), resumed.student.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())


def test_configs_round_trip_and_reject_unknown_keys() -> None:
    for name in ("paper", "cpu"):
        cfg = DistillConfig.preset(name)
        assert DistillConfig.from_dict(asdict(cfg)) == cfg
    paper = DistillConfig.preset("paper")
    assert (paper.points_per_net, paper.iterations, paper.lr, paper.nets_per_step) == (128, 150_000, 1e-3, 0)
    assert not paper.occupied_only and DistillConfig.preset("cpu").occupied_only
    with pytest.raises(SettingError, match="unknown settings"):
        DistillConfig.from_dict({**asdict(paper), "bogus": 1})
    with pytest.raises(SettingError):
        DistillConfig.preset("gpu")
    with pytest.raises(SettingError, match="occupied_fraction"):
        DistillConfig(occupied_fraction=1.5)
    with pytest.raises(KiloNerfError, match="occupancy"):
        trainer(occupied_only=True)
