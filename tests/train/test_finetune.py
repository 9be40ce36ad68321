"""Fine-tuning: photometric loss goes down, the L2 term, empty-space skipping, resume, renders."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from tests.helpers.fields import SphereField, ball_occupancy
from torch import Tensor
from tests.helpers.toy_scenes import sphere_scene

from kilonerf.data.rays import RayTable
from kilonerf.fields.multinet import MultiNetField
from kilonerf.kernels import get_backend, register_backend
from kilonerf.kernels.base import GroupedBackend, MultiNetParams
from kilonerf.render.dense import render_dense
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.settings import SettingError
from kilonerf.train.distill import DistillTrainer
from kilonerf.train.config import DistillConfig, FinetuneConfig, LoopConfig
from kilonerf.train.finetune import FinetuneTrainer, l2_decay, view_dependent_l2
from kilonerf.train.loop import run_training

COLOUR = (0.1, 0.2, 0.9)
BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


# Tiny tensors: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scene():  # type: ignore[no-untyped-def]
    return sphere_scene(num_train=4, num_val=1, size=16, radius=0.6, flat=COLOUR)


@pytest.fixture(scope="module")
def occupancy() -> OccupancyGrid:
    return ball_occupancy(BOX, 16, 0.75)


def make(scene, occupancy, student: MultiNetField | None = None, **kw: object) -> FinetuneTrainer:  # type: ignore[no-untyped-def]
    cfg = FinetuneConfig(**{"iterations": 30, "rays_per_step": 128, "num_samples": 48, "render_samples": 64,
                            "lr": 5e-3, **kw})  # type: ignore[arg-type]  # fmt: skip
    return FinetuneTrainer(student or MultiNetField(BOX, res=(2, 2, 2)), occupancy, scene, cfg)


def train_mse(t: FinetuneTrainer, table: RayTable) -> float:
    o, d, rgb = table.rays(torch.arange(len(table)))
    return float(torch.mean((t.render_rays(o, d) - rgb) ** 2))


def run_steps(t: FinetuneTrainer, table: RayTable, steps: int) -> None:
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        t.train_step(step, *table.sample(t.rays_per_step, gen))


def test_finetuning_a_distilled_student_lowers_the_loss(scene, occupancy) -> None:  # type: ignore[no-untyped-def]
    student = MultiNetField(BOX, res=(2, 2, 2))
    d = DistillTrainer(SphereField(flat=COLOUR), student, occupancy, DistillConfig(lr=3e-3, points_per_net=128), scene=scene)
    e = torch.zeros(0, 3)
    for step in range(15):
        d.train_step(step, e, e, e)
    t = make(scene, occupancy, d.student)
    table = RayTable(scene, "train")
    before = train_mse(t, table)
    run_steps(t, table, 25)
    assert train_mse(t, table) < 0.7 * before


def test_from_scratch_finetuning_works(scene, occupancy) -> None:  # type: ignore[no-untyped-def]
    t = make(scene, occupancy)
    table = RayTable(scene, "train")
    before = train_mse(t, table)
    run_steps(t, table, 30)
    after = train_mse(t, table)
    assert after < 0.5 * before, (before, after)


def test_l2_term_is_the_sum_of_view_dependent_norms(scene, occupancy) -> None:  # type: ignore[no-untyped-def]
    student = MultiNetField(BOX, res=(2, 2, 2), shared_init=False)
    t = make(scene, occupancy, student, l2_weight=0.5, lr=1e-3)
    by_hand = sum(float(torch.sqrt((p.detach().double() ** 2).sum())) for p in
                  (student.weights[3], student.biases[3], student.weights[4], student.biases[4]))  # fmt: skip
    assert float(view_dependent_l2(student).detach()) == pytest.approx(by_hand, rel=1e-6)
    # Rays that miss the box: the photometric term is constant, only the regulariser has a gradient.
    origins = torch.tensor([[5.0, 5.0, 5.0]]).expand(8, 3)
    dirs = torch.tensor([[1.0, 0.0, 0.0]]).expand(8, 3)
    before = [p.detach().clone() for p in [*student.weights, *student.biases]]
    out = t.train_step(0, origins, dirs, torch.full((8, 3), 0.5))
    assert float(out["l2"]) == pytest.approx(by_hand, rel=1e-6)
    assert float(out["loss"]) == pytest.approx(float(out["mse"]) + 0.5 * by_hand, rel=1e-6)
    # Only the parameters with a gradient moved (the step consumed the gradients themselves).
    moved = [not torch.equal(p.detach(), b) for p, b in zip([*student.weights, *student.biases], before)]
    assert moved == [False, False, False, True, True] * 2


class RecordingBackend(GroupedBackend):
    """The reference backend, recording every (network, local point) it evaluates."""

    name = "recording"
    differentiable = True

    def __init__(self) -> None:
        self.seen: list[tuple[Tensor, Tensor]] = []

    def evaluate(self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor,
                 dir_index: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self.seen.append((net_index.detach().clone(), local_pos.detach().clone()))
        return get_backend("torch_ref").evaluate(params, net_index, local_pos, dirs, dir_index)


def test_l2_decay_is_the_l2_terms_gradient() -> None:
    """What the optimiser adds (c * p per tensor) is autograd's gradient of l2_weight x the L2 term."""
    student = MultiNetField(BOX, res=(2, 1, 2), shared_init=False)
    value, decay = l2_decay(student, 0.25)
    params = student.view_dependent_parameters()
    grads = torch.autograd.grad(0.25 * view_dependent_l2(student), params)
    assert float(value) == pytest.approx(float(view_dependent_l2(student).detach()), rel=1e-6)
    assert set(decay) == set(params)
    for p, g in zip(params, grads):
        assert torch.allclose(decay[p] * p.detach(), g, rtol=1e-5, atol=1e-9)


def test_samples_in_empty_voxels_are_not_evaluated(scene) -> None:  # type: ignore[no-untyped-def]
    half = torch.zeros(8, 8, 8, dtype=torch.bool)
    half[:4] = True  # only x < 0 is occupied
    occ = OccupancyGrid.from_dense(half, BOX)
    recorder = RecordingBackend()
    register_backend("recording", lambda: recorder)
    student = MultiNetField(BOX, res=(2, 2, 2), backend="recording")
    t = make(scene, occ, student, rays_per_step=64, num_samples=32)
    table = RayTable(scene, "train")
    t.train_step(0, *table.sample(64, torch.Generator().manual_seed(0)))
    nets = torch.cat([n for n, _ in recorder.seen])
    world = student.grid.to_world(nets, torch.cat([p for _, p in recorder.seen]))
    assert 0 < nets.numel() < 64 * 32 // 2
    assert float(world[:, 0].max()) <= 1e-5  # nothing from the empty half
    assert bool(occ.lookup(world - torch.tensor([1e-6, 0.0, 0.0])).all())


def test_render_rays_matches_the_dense_reference(scene, occupancy) -> None:  # type: ignore[no-untyped-def]
    student = MultiNetField(BOX, res=(2, 2, 2), shared_init=False, seed=3)
    t = make(scene, occupancy, student, render_samples=48)
    o, d, _ = RayTable(scene, "val").image(0)
    with torch.no_grad():
        ref = render_dense(student, o, d, torch.full((o.shape[0],), scene.near), torch.full((o.shape[0],), scene.far),
                           48, t.background, sample_mask=occupancy.lookup).rgb  # fmt: skip
    torch.testing.assert_close(t.render_rays(o, d), ref, atol=2e-5, rtol=0)


def test_resume_is_bit_identical(scene, occupancy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rays = RayTable(scene, "train")
    cfg = LoopConfig(max_steps=6, ckpt_every=3, log_every=1, progress=False)
    straight = make(scene, occupancy, rays_per_step=32, num_samples=16)
    run_training(straight, rays, None, cfg, tmp_path / "a.pt", "finetune")
    first = make(scene, occupancy, rays_per_step=32, num_samples=16)
    run_training(first, rays, None, LoopConfig(**{**asdict(cfg), "max_steps": 3}), tmp_path / "b.pt", "finetune")
    resumed = make(scene, occupancy, rays_per_step=32, num_samples=16)
    assert run_training(resumed, rays, None, cfg, tmp_path / "b.pt", "finetune").resumed_from == 3
    for p, q in zip(straight.student.parameters(), resumed.student.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())


def test_configs_round_trip_and_reject_unknown_keys() -> None:
    for name in ("paper", "cpu"):
        cfg = FinetuneConfig.preset(name)
        assert FinetuneConfig.from_dict(asdict(cfg)) == cfg
    paper = FinetuneConfig.preset("paper")
    assert (paper.rays_per_step, paper.num_samples, paper.lr, paper.lr_decay_steps, paper.l2_weight) == (
        8192, 384, 1e-3, 500_000, 1e-6)  # fmt: skip
    t_lr = FinetuneTrainer.lr_at
    assert t_lr(type("T", (), {"config": paper})(), 500_000) == pytest.approx(1e-4)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="unknown settings"):
        FinetuneConfig.from_dict({**asdict(paper), "bogus": 1})
    with pytest.raises(SettingError):
        FinetuneConfig.preset("gpu")


def test_a_step_bumps_the_parameters_versions(scene, occupancy) -> None:  # type: ignore[no-untyped-def]
    """The compiled Adam updates in place without bumping version counters; the compiled backend's
    bf16 weight tiles are cached by version, so without the bump a render after a step would
    use the weights of before it."""
    t = make(scene, occupancy)
    before = [p._version for p in t.student.parameters()]
    run_steps(t, RayTable(scene, "train"), 1)
    assert all(p._version > v for p, v in zip(t.student.parameters(), before))
