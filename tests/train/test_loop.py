"""The shared training loop: batches, resume, divergence, time budget, history, checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from kilonerf.data.rays import RayTable
from kilonerf.errors import RunError
from kilonerf.io import safe_torch_load
from kilonerf.train.loop import (
    CKPT_FORMAT,
    LoopConfig,
    TrainingDiverged,
    crop_pixel_ids,
    eta_seconds,
    run_training,
)
from kilonerf.train.nerf_teacher import NeRFTeacherTrainer
from kilonerf.train.config import NeRFTeacherConfig
from tests.helpers.toy_scenes import sphere_scene


# Tiny tensors: see the one_thread fixture in conftest.py.
pytestmark = pytest.mark.usefixtures("one_thread")


class FakeClock:
    """A clock that moves only when told: the loop's timing without the machine's speed."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Linear:
    """rgb = sigmoid(W [o, d] + b) with Adam and global-RNG noise (as dropout would use).

    Returns NaN from step ``nan_from`` on; each step advances ``clock`` by ``step_seconds``.
    """

    def __init__(self, rays_per_step: int = 16, nan_from: int | None = None, step_seconds: float = 0.0,
                 clock: FakeClock | None = None) -> None:  # fmt: skip
        self.rays_per_step = rays_per_step
        self.nan_from, self.step_seconds, self.clock = nan_from, step_seconds, clock
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = nn.Linear(6, 3)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-2)
        self.batches: list[tuple[int, Tensor]] = []

    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Any]:
        if self.clock is not None:
            self.clock.now += self.step_seconds
        self.batches.append((step, rgb.clone()))
        if origins.shape[0] == 0:
            loss = sum((p**2).sum() for p in self.model.parameters())
        else:
            pred = torch.sigmoid(self.model(torch.cat([origins, dirs], -1)))
            loss = torch.mean((pred + 0.01 * torch.randn_like(pred) - rgb) ** 2)
        if self.nan_from is not None and step >= self.nan_from:
            loss = loss * float("nan")
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        loss = loss.detach()
        return {"loss": loss, "psnr": -10 * torch.log10(loss), "extra": 1.0}

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        return torch.sigmoid(self.model(torch.cat([origins, dirs], -1)))

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])


@pytest.fixture(scope="module")
def tables() -> tuple[RayTable, RayTable]:
    scene = sphere_scene(size=16, radius=0.9, flat=(0.1, 0.2, 0.9))
    return RayTable(scene, "train"), RayTable(scene, "val")


def cfg(**kw: Any) -> LoopConfig:
    return LoopConfig(**{"max_steps": 10, "log_every": 1, "ckpt_every": 1000, "progress": False, **kw})


def params(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_resume_is_bit_identical_for_the_teacher(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    scene = sphere_scene(size=8)
    tc = NeRFTeacherConfig.preset("cpu", rays_per_step=16, num_samples=8, width=16, dir_width=8, precrop_steps=0)
    train = RayTable(scene, "train")
    straight = NeRFTeacherTrainer(scene, tc)
    full = run_training(straight, train, None, cfg(max_steps=6), tmp_path / "a.pt", "teacher")

    first = NeRFTeacherTrainer(scene, tc)
    run_training(first, train, None, cfg(max_steps=3), tmp_path / "b.pt", "teacher")
    second = NeRFTeacherTrainer(scene, tc)  # a fresh process would start like this
    resumed = run_training(second, train, None, cfg(max_steps=6), tmp_path / "b.pt", "teacher")

    assert resumed.resumed_from == 3 and resumed.step == 6
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
    for a, b in zip(params(straight.field), params(second.field)):
        assert torch.equal(a, b)
    sa, sb = straight.optimizer.state_dict()["state"], second.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg_sq"], sb[k]["exp_avg_sq"]) for k in sa)


def test_resume_restores_batches_and_global_rng(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    train, _ = tables
    a = Linear()
    run_training(a, train, None, cfg(max_steps=8), tmp_path / "a.pt", "s")
    b1 = Linear()
    run_training(b1, train, None, cfg(max_steps=4), tmp_path / "b.pt", "s")
    torch.rand(100)  # whatever happens between the two processes must not matter
    b2 = Linear()
    run_training(b2, train, None, cfg(max_steps=8), tmp_path / "b.pt", "s")
    for (sa, ra), (sb, rb) in zip(a.batches[4:], b2.batches):
        assert sa == sb and torch.equal(ra, rb)
    for p, q in zip(params(a.model), params(b2.model)):
        assert torch.equal(p, q)


def test_same_seed_same_run_other_seed_other_batches(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    train, _ = tables
    runs = []
    for i, seed in enumerate((0, 0, 1)):
        t = Linear()
        runs.append((t, run_training(t, train, None, cfg(max_steps=5, seed=seed), tmp_path / f"{i}.pt", "s")))
    (a, ra), (b, rb), (c, _) = runs
    assert [r["loss"] for r in ra.history] == [r["loss"] for r in rb.history]
    assert all(torch.equal(x, y) for (_, x), (_, y) in zip(a.batches, b.batches))
    assert not all(torch.equal(x, y) for (_, x), (_, y) in zip(a.batches, c.batches))


@pytest.mark.parametrize("log_every", [1, 100])
def test_divergence_keeps_the_last_good_checkpoint(
    tmp_path: Path, tables: tuple[RayTable, RayTable], log_every: int
) -> None:
    train, _ = tables
    path = tmp_path / "c.pt"
    t = Linear(nan_from=7)
    with pytest.raises(TrainingDiverged) as info:
        run_training(t, train, None, cfg(max_steps=20, ckpt_every=5, log_every=log_every), path, "distill")
    msg = str(info.value)
    assert "distill" in msg and "step 7" in msg and "\n" not in msg
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 5 and ckpt["stage"] == "distill"
    good = Linear()
    run_training(good, train, None, cfg(max_steps=5), tmp_path / "ref.pt", "distill")
    for name, value in good.model.state_dict().items():
        assert torch.equal(ckpt["trainable"]["model"][name], value)
    assert all(torch.isfinite(v).all() for v in ckpt["trainable"]["model"].values())


def test_divergence_before_any_checkpoint(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    with pytest.raises(TrainingDiverged, match="step 0.*no checkpoint"):
        run_training(Linear(nan_from=0), tables[0], None, cfg(), tmp_path / "c.pt", "finetune")
    assert not (tmp_path / "c.pt").exists()


def test_time_budget_is_respected_and_resumable(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    train, _ = tables
    clock = FakeClock()
    t = Linear(step_seconds=0.125, clock=clock)
    res = run_training(t, train, None, cfg(max_steps=10_000, max_seconds=2.0), tmp_path / "c.pt", "s", clock=clock)
    # 2 s of 1/8 s steps (exact in binary): the budget is spent after 16 steps; validation and
    # checkpoints take no time on this clock.
    assert res.stopped == "max_seconds" and res.step == 16 and res.wall == 2.0
    assert safe_torch_load(tmp_path / "c.pt")["step"] == res.step
    longer = cfg(max_steps=res.step + 3, max_seconds=60)
    clock2 = FakeClock()
    more = run_training(Linear(step_seconds=0.125, clock=clock2), train, None, longer, tmp_path / "c.pt", "s", clock=clock2)
    assert more.stopped == "max_steps" and more.step == res.step + 3 and more.resumed_from == res.step


def test_eta_respects_the_budget() -> None:
    assert eta_seconds(100, 0.5, wall=10.0, max_seconds=None) == 50.0
    assert eta_seconds(100, 0.5, wall=10.0, max_seconds=30.0) == 20.0
    assert eta_seconds(10, 0.5, wall=10.0, max_seconds=300.0) == 5.0
    assert eta_seconds(10, 0.5, wall=40.0, max_seconds=30.0) == 0.0


def test_history_validation_log_and_checkpoint_contents(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    train, val = tables
    seen: list[dict[str, Any]] = []
    c = cfg(max_steps=10, log_every=4, val_every=5, val_views=1, ckpt_every=4)
    res = run_training(Linear(), train, val, c, tmp_path / "c.pt", "teacher", log=seen.append)
    assert [r["step"] for r in res.history] == [4, 5, 8, 10]
    assert [("val_psnr" in r) for r in res.history] == [False, True, False, True]
    assert all({"elapsed", "wall", "loss", "psnr", "extra"} <= set(r) for r in res.history)
    assert res.history[0]["elapsed"] <= res.history[-1]["elapsed"]
    assert [r["step"] for r in seen] == [4, 5, 8, 10] and all(r["stage"] == "teacher" for r in seen)
    assert res.last_val_psnr == res.history[-1]["val_psnr"] and 0 < res.last_val_psnr < 60
    ckpt = torch.load(tmp_path / "c.pt", weights_only=True)
    assert ckpt["format"] == CKPT_FORMAT and ckpt["step"] == 10 and ckpt["history"] == res.history
    assert {"generator", "cpu_rng", "cuda_rng", "elapsed", "wall", "trainable"} <= set(ckpt)
    # Nothing left to do: returns at once without writing.
    again = run_training(Linear(), train, val, c, tmp_path / "c.pt", "teacher")
    assert again.step == 10 and again.history == res.history


def test_wrong_stage_checkpoint_is_refused(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    run_training(Linear(), tables[0], None, cfg(max_steps=2), tmp_path / "c.pt", "teacher")
    with pytest.raises(RunError, match="stage 'teacher'"):
        run_training(Linear(), tables[0], None, cfg(max_steps=4), tmp_path / "c.pt", "finetune")


def test_stage_without_rays_gets_empty_tensors(tmp_path: Path) -> None:
    t = Linear(rays_per_step=0)
    res = run_training(t, None, None, cfg(max_steps=5), tmp_path / "c.pt", "distill")
    assert res.step == 5 and all(rgb.shape == (0, 3) for _, rgb in t.batches)
    assert res.history[-1]["loss"] < res.history[0]["loss"]


def test_precrop_draws_from_the_image_centre(tmp_path: Path, tables: tuple[RayTable, RayTable]) -> None:
    train, _ = tables
    ids = crop_pixel_ids(train, 0.5)
    xy = train.pixel_xy[ids].long()
    assert ids.numel() == train.num_images * 64  # rows and columns 4..11 of 16
    assert int(xy.min()) == 4 and int(xy.max()) == 11
    t = Linear(rays_per_step=64)
    run_training(t, train, None, cfg(max_steps=6, precrop_steps=3), tmp_path / "c.pt", "s")
    white = [bool((rgb == 1.0).all(-1).any()) for _, rgb in t.batches]
    assert white == [False] * 3 + [True] * 3  # the crop is all sphere; the border is white


def test_progress_bar_shows_loss_and_eta(
    tmp_path: Path, tables: tuple[RayTable, RayTable], capsys: pytest.CaptureFixture[str]
) -> None:
    run_training(Linear(), tables[0], None, cfg(max_steps=3, progress=True), tmp_path / "c.pt", "teacher")
    err = capsys.readouterr().err
    assert "teacher" in err and "loss=" in err and "eta=" in err and "it/s" in err
