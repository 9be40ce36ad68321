"""Several processes (2 gloo ranks on the CPU, forked, 1 thread each): sharded distillation is
bit-identical to one process, a data-parallel fine-tuning step equals the one-process step on
the same global batch, a resumed 2-rank run continues exactly, and a rank that dies or stalls
stops the run with a one-line error (collective timeout) after which the run resumes; eval views and
rendered camera-path frames split across 2 ranks are the one-process ones."""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.helpers.fields import SphereField, ball_occupancy
from tests.helpers.toy_scenes import sphere_scene

from kilonerf.data.rays import RayTable
from kilonerf.evaluation import evaluate_split
from kilonerf.fields.multinet import MultiNetField
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.render_path import render_run
from kilonerf.run.pipeline import data_parallel_student
from kilonerf.train import finetune as finetune_module
from kilonerf.train.config import DistillConfig, FinetuneConfig, LoopConfig
from kilonerf.train.distill import DistillTrainer
from kilonerf.train.distributed import SINGLE, DataParallel, DistributedError, Group, init_from_env
from kilonerf.train.finetune import FinetuneTrainer
from kilonerf.train.loop import run_training

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
WORLD = 2

pytestmark = pytest.mark.usefixtures("one_thread")


# ---- scenarios (run in every rank, or in one process with SINGLE) -----------------------------

def distill_trainer(group: Group, occupied_only: bool) -> DistillTrainer:
    cfg = DistillConfig(iterations=6, points_per_net=32, chunk_points=3 * 32, lr=5e-3, occupied_only=occupied_only,
                        occupancy_dilation=0, eval_points_per_net=16)  # fmt: skip
    half = torch.zeros(6, 6, 6, dtype=torch.bool)
    half[:3] = True  # x < 0: 8 of the 12 cells hold occupied voxels
    occ = OccupancyGrid.from_dense(half, BOX) if occupied_only else None
    student = MultiNetField(BOX, res=(3, 2, 2), hidden=8, seed=0)
    return DistillTrainer(SphereField(), student, occ, cfg, ref_step=0.0211, group=group)


def distill_run(group: Group, out: Path, occupied_only: bool) -> dict[str, Any]:
    t = distill_trainer(group, occupied_only)
    loop = LoopConfig(max_steps=6, ckpt_every=4, log_every=2, progress=False)
    result = run_training(t, None, None, loop, out / f"distill_{group.world}.pt", "distill", group=group)
    state = t.state_dict()  # gathered
    return {"student": state["student"], "optimizer": state["optimizer"], "loss": [r["loss"] for r in result.history]}


_SCENE = None


def scene():  # type: ignore[no-untyped-def]
    global _SCENE
    if _SCENE is None:
        _SCENE = sphere_scene(num_train=3, num_val=1, size=12, radius=0.6, flat=(0.1, 0.2, 0.9))
    return _SCENE


def finetune_trainer() -> FinetuneTrainer:
    cfg = FinetuneConfig(iterations=10, rays_per_step=24, num_samples=12, render_samples=16, lr=5e-3, l2_weight=1e-3)
    student = MultiNetField(BOX, res=(4, 4, 4), hidden=8, seed=0, shared_init=False)  # 24 rays miss some cells
    with torch.no_grad():
        student.biases[2][:, 0] = 5.0  # some density from the start, so that colours get gradients
    return FinetuneTrainer(student, ball_occupancy(BOX, 8, 0.75), scene(), cfg)


def centred_samples() -> None:
    """Fine-tuning's stratified jitter, which each rank draws from its own stream, replaced by
    bin centres, so that one process and two ranks evaluate the same points."""
    original = finetune_module.render_dense

    def centred(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "sampling": "centers"})

    finetune_module.render_dense = centred  # type: ignore[assignment]


def finetune_step(group: Group, out: Path, sparse: bool = True) -> dict[str, Any]:
    centred_samples()
    t = finetune_trainer()
    o, d, rgb = RayTable(scene(), "train").sample(24, torch.Generator().manual_seed(5))
    trainable = (data_parallel_student(t, group) if sparse else DataParallel(t, group)) if group.active else t
    trainable.train_step(0, o, d, rgb)
    if group.active:
        n = sum(p.numel() for p in t.student.parameters())
        assert (trainable.reduced_values < n / 2) == sparse, (trainable.reduced_values, n)
    return {"params": [p.detach().clone() for p in t.student.parameters()],
            "exp_avg": [t.optimizer.state[p]["exp_avg"].clone() for p in t.student.parameters()]}  # fmt: skip


def finetune_run(group: Group, out: Path, name: str, max_steps: int, die_at: int | None = None,
                 how: str = "exit") -> dict[str, Any]:  # fmt: skip
    t = finetune_trainer()
    inner_step = t.train_step

    def step(s: int, *rays: torch.Tensor) -> dict[str, Any]:
        if die_at is not None and s == die_at and group.rank == 1:
            if how == "exit":
                os._exit(3)
            time.sleep(120)  # stalled: the parent kills it
        return inner_step(s, *rays)

    t.train_step = step  # type: ignore[method-assign]
    loop = LoopConfig(max_steps=max_steps, ckpt_every=3, log_every=1, progress=False)
    rays = RayTable(scene(), "train")
    result = run_training(data_parallel_student(t, group), rays, None, loop, out / f"{name}.pt", "finetune", group=group)
    return {"params": [p.detach().clone() for p in t.student.parameters()], "resumed_from": result.resumed_from}


def eval_views(group: Group, out: Path) -> dict[str, Any]:
    def render(origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(3.0 * dirs + origins)

    folder = out / f"eval_{group.world}"
    result = evaluate_split(render, scene(), "train", folder, progress=False, group=group)
    return {"images": [{k: v for k, v in r.items() if k != "ms_per_frame"} for r in result["images"]],
            "psnr": result["psnr"], "files": sorted(p.name for p in folder.iterdir()) if group.is_main else []}


def render_path_frames(group: Group, out: Path) -> dict[str, Any]:
    """3 frames of an orbit around the sphere run: with 2 ranks the second round has one frame."""
    folder = out / f"frames_{group.world}"
    render_run(out / "sphere" / "run", "orbit", folder, frames=3, width=12, save_path=out / f"path_{group.world}.json",
               progress=False, group=group)  # fmt: skip
    return {"written": sorted(p.name for p in out.glob(f"*_{group.world}*"))}


# ---- two forked ranks ---------------------------------------------------------------------------

def _rank_main(rank: int, port: int, timeout: float, scenario: str, args: tuple, tmp: Path, out: Path) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), KILONERF_DIST_TIMEOUT=str(timeout))  # fmt: skip
    torch.set_num_threads(1)
    try:
        group, _ = init_from_env(torch.device("cpu"))
        result = globals()[scenario](group, tmp, *args)
        torch.save(result, out / f"rank{rank}.pt")
    except DistributedError as exc:
        (out / f"rank{rank}.err").write_text(str(exc))
    except BaseException:  # noqa: BLE001 - reported to the test
        (out / f"rank{rank}.crash").write_text(traceback.format_exc())
    finally:
        os._exit(0)  # no atexit handlers of the forked pytest process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_ranks(tmp: Path, scenario: str, *args: Any, timeout: float = 60.0, kill_after: float = 60.0) -> list[Any]:
    """Run ``scenario(group, out, *args)`` in 2 forked ranks; per rank its result, or the
    error text (a ``str``), or None when it died."""
    out = tmp / f"ranks_{scenario}_{time.monotonic_ns()}"
    out.mkdir()
    ctx = mp.get_context("fork")
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, timeout, scenario, args, tmp, out)) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + kill_after
    procs[0].join(kill_after)
    for p in procs[1:]:  # a stalled rank is killed soon after rank 0 has stopped
        p.join(max(0.1, min(5.0, deadline - time.monotonic())))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    results: list[Any] = []
    for r in range(WORLD):
        crash = out / f"rank{r}.crash"
        assert not crash.exists(), crash.read_text()
        if (out / f"rank{r}.pt").exists():
            results.append(torch.load(out / f"rank{r}.pt", weights_only=True))
        elif (out / f"rank{r}.err").exists():
            results.append((out / f"rank{r}.err").read_text())
        else:
            results.append(None)
    return results


def bits_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x.view(torch.int32), y.view(torch.int32))
                                    for x, y in zip(a, b))  # fmt: skip


# ---- tests --------------------------------------------------------------------------------------

@pytest.mark.parametrize("occupied_only", [True, False], ids=["occupied-networks", "all-networks"])
def test_sharded_distillation_is_bit_identical_to_one_process(tmp_path: Path, occupied_only: bool) -> None:
    one = distill_run(SINGLE, tmp_path, occupied_only)
    ranks = two_ranks(tmp_path, "distill_run", occupied_only)
    t = distill_trainer(SINGLE, occupied_only)
    assert 2 < t.active.numel() <= 12 and (t.active.numel() < 12) == occupied_only  # several chunks, both Adam paths
    for r in ranks:
        assert isinstance(r, dict), r
        assert bits_equal(list(one["student"].values()), list(r["student"].values()))
        for key in ("exp_avg", "exp_avg_sq"):
            assert bits_equal(one["optimizer"][key], r["optimizer"][key])
        assert torch.equal(one["optimizer"]["steps"], r["optimizer"]["steps"])
        assert r["loss"] == pytest.approx(one["loss"], rel=1e-5)  # summed over ranks, in another order
    trained = [v for v in one["student"].values()]
    assert not bits_equal(trained, list(distill_trainer(SINGLE, occupied_only).student.state_dict().values()))


@pytest.mark.parametrize("sparse", [True, False], ids=["sampled-networks", "all-networks"])
def test_a_two_rank_finetuning_step_equals_the_one_process_step(tmp_path: Path, sparse: bool) -> None:
    original = finetune_module.render_dense
    try:
        one = finetune_step(SINGLE, tmp_path)
        # One rank's half of the batch alone gives another gradient: the test can fail.
        half_trainer = finetune_trainer()
        o, d, rgb = RayTable(scene(), "train").sample(24, torch.Generator().manual_seed(5))
        half_trainer.train_step(0, o[::2], d[::2], rgb[::2])
        half = [half_trainer.optimizer.state[p]["exp_avg"] for p in half_trainer.student.parameters()]
    finally:
        finetune_module.render_dense = original
    ranks = two_ranks(tmp_path, "finetune_step", sparse)
    assert all(isinstance(r, dict) for r in ranks), ranks
    assert bits_equal(ranks[0]["params"], ranks[1]["params"])  # the ranks stay in step
    for a, b in zip(one["params"] + one["exp_avg"], ranks[0]["params"] + ranks[0]["exp_avg"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(h, a, rtol=1e-3, atol=1e-6) for h, a in zip(half, one["exp_avg"]))


@pytest.mark.parametrize("how", ["exit", "stall"])
def test_a_dead_rank_stops_the_run_with_one_line_and_the_run_resumes_exactly(tmp_path: Path, how: str) -> None:
    straight = two_ranks(tmp_path, "finetune_run", "straight", 6)
    assert all(isinstance(r, dict) for r in straight), straight
    assert bits_equal(straight[0]["params"], straight[1]["params"])
    t0 = time.monotonic()
    crashed = two_ranks(tmp_path, "finetune_run", "crash", 6, 4, how, timeout=3.0, kill_after=40.0)
    assert time.monotonic() - t0 < 35.0  # stopped by the error, not by the test's kill
    message = crashed[0]
    assert isinstance(message, str) and "\n" not in message, crashed
    assert "rank 0/2" in message and "rerun the same command to resume" in message
    resumed = two_ranks(tmp_path, "finetune_run", "crash", 6)
    assert [r["resumed_from"] for r in resumed] == [3, 3]
    for r in resumed:
        assert bits_equal(r["params"], straight[0]["params"])


def test_evaluation_views_split_across_two_ranks_give_the_one_process_result(tmp_path: Path) -> None:
    one = eval_views(SINGLE, tmp_path)
    ranks = two_ranks(tmp_path, "eval_views")
    assert all(isinstance(r, dict) for r in ranks), ranks
    assert len(one["images"]) == 3 and one["files"] == ["0000.png", "0001.png", "0002.png", "metrics.json"]
    for r in ranks:
        assert r["images"] == one["images"] and r["psnr"] == pytest.approx(one["psnr"], rel=1e-12)
    assert ranks[0]["files"] == one["files"]  # written once, by rank 0
    first = (tmp_path / "eval_1").iterdir()
    for f in first:
        if f.suffix == ".png":
            assert (tmp_path / "eval_2" / f.name).read_bytes() == f.read_bytes()


def test_render_frames_split_across_two_ranks_are_the_one_process_frames_in_order(tmp_path: Path) -> None:
    from tests.helpers.runs import write_sphere_run

    write_sphere_run(tmp_path / "sphere")
    one = render_path_frames(SINGLE, tmp_path)
    ranks = two_ranks(tmp_path, "render_path_frames")
    assert all(isinstance(r, dict) for r in ranks), ranks
    assert one["written"] == ["frames_1", "path_1.json"] and ranks[0]["written"] == ["frames_2", "path_2.json"]
    names = sorted(p.name for p in (tmp_path / "frames_1").iterdir())
    assert names == ["0000.png", "0001.png", "0002.png"]
    assert sorted(p.name for p in (tmp_path / "frames_2").iterdir()) == names  # written once, by rank 0
    frames = [(tmp_path / "frames_1" / n).read_bytes() for n in names]
    assert len(set(frames)) == 3  # distinct views: frames out of order would fail
    assert [(tmp_path / "frames_2" / n).read_bytes() for n in names] == frames
    assert (tmp_path / "path_2.json").read_bytes() == (tmp_path / "path_1.json").read_bytes()


def test_kilonerf_render_with_two_processes_writes_the_one_process_video(tmp_path: Path) -> None:
    """`kilonerf render --nproc 2` through torch's elastic launcher: one progress bar and one
    message (rank 0's), the same MP4 bytes as one process; a bad --out is one line, exit code 2."""
    import subprocess
    import sys

    from tests.helpers.runs import write_sphere_run

    run = write_sphere_run(tmp_path / "sphere")
    one = tmp_path / "one.mp4"
    render_run(run, "orbit", one, frames=3, width=12, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "kilonerf", "render", str(run), "--path", "orbit", "--frames", "3",
           "--resolution", "12", "--nproc", "2", "--out"]  # fmt: skip
    out = subprocess.run(cmd + [str(tmp_path / "two.mp4")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("rendered 3 frames") == 1 and out.stderr.count("render: 100%") == 1, out.stdout + out.stderr
    assert (tmp_path / "two.mp4").read_bytes() == one.read_bytes()
    bad = subprocess.run(cmd + [str(one)], capture_output=True, text=True, env=env, timeout=120)
    errors = [line for line in bad.stderr.splitlines() if line.startswith("kilonerf: error")]
    assert bad.returncode == 2 and len(errors) == 1 and "already exists" in errors[0], bad.stderr[-3000:]


def test_group_of_one_is_a_no_op_and_shares_are_strided() -> None:
    x = torch.arange(4.0)
    assert SINGLE.all_reduce(x) is x and torch.equal(x, torch.arange(4.0))
    g = replace(SINGLE, rank=1, world=3)
    assert list(range(10)[g.share(10)]) == [1, 4, 7]


@pytest.mark.slow
def test_kilonerf_train_with_two_processes_end_to_end(tmp_path: Path) -> None:
    """`kilonerf train --nproc 2` through torch's elastic launcher: every stage, one set of
    messages (rank 0's), a resumable run; a bad setting is one line and exit code 2."""
    import subprocess
    import sys

    from tests.helpers.runs import TINY_TRAIN

    from kilonerf.data.procedural import write_procedural_scene

    scene_dir = write_procedural_scene(tmp_path / "scene", size=16, n_train=4, n_val=2, n_test=1, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "kilonerf", "train", str(scene_dir), "--out", str(tmp_path / "run"), "--nproc", "2"]
    out = subprocess.run(cmd + TINY_TRAIN, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("2 processes") == 1 and out.stdout.count("[finetune] running") == 1, out.stdout
    assert (tmp_path / "run" / "student.pt").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and again.stdout.count("[finetune] already done") == 1, again.stdout + again.stderr
    bad = subprocess.run(cmd[:-4] + ["--out", str(tmp_path / "bad"), "--nproc", "2", "--set", "distill.lr=-1"],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    errors = [line for line in bad.stderr.splitlines() if line.startswith("kilonerf: error")]
    assert bad.returncode == 2 and len(errors) == 1 and "distill.lr" in errors[0], bad.stderr[-3000:]
