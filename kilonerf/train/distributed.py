"""Several processes training one run with ``torch.distributed`` (gloo on CPUs, NCCL on GPUs).

Processes are started by torch's launcher (``torchrun``, or ``kilonerf train --nproc N`` through
:func:`launch_local`), which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address; :func:`init_from_env` joins the group. One process is a :class:`Group` of size 1 and
every helper below is then a no-op, so single-process code paths stay unchanged.

Every collective goes through :class:`Group`, which turns a failure (a rank died, or stalled
past the group's timeout) into one :class:`DistributedError` line instead of a hang or a
traceback: ``KILONERF_DIST_TIMEOUT`` (seconds, default 1800) bounds how long any rank waits.

Data parallelism (:class:`DataParallel`): every rank draws the same global batch, trains on its
strided share of it, and its gradients are weighted by its share and summed over ranks just
before the optimiser step (an optimiser pre-step hook, so the trainables need no change).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim.optimizer import register_optimizer_step_pre_hook

from kilonerf.errors import KiloNerfError

TIMEOUT_ENV = "KILONERF_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0


class DistributedError(KiloNerfError):
    """A collective failed or timed out (another rank died or stalled); the run can be resumed."""


def _timeout_from_env() -> float:
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise KiloNerfError(f"{TIMEOUT_ENV} must be a number of seconds, got '{text}'") from None
    if value <= 0:
        raise KiloNerfError(f"{TIMEOUT_ENV} must be > 0 seconds, got '{text}'")
    return value


@dataclass(frozen=True)
class Group:
    """This process's place among the processes training one run (the default group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run folder, logs and progress bars."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def _run(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (RuntimeError, ValueError) as exc:  # DistBackendError and gloo's errors are RuntimeErrors
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DistributedError(
                f"rank {self.rank}/{self.world}: {what} failed (another process died or stalled past the "
                f"{self.timeout_s:g} s timeout: {first}); rerun the same command to resume from the last checkpoint"
            ) from None

    def all_reduce(self, tensor: Tensor, op: str = "sum") -> Tensor:
        """In-place sum (``op="sum"``) or max (``"max"``) of ``tensor`` over ranks; returns it."""
        if self.active:
            red = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
            self._run(f"all-reduce of {tensor.numel()} values", lambda: dist.all_reduce(tensor, op=red))
        return tensor

    def sum(self, value: float) -> float:
        """``value`` summed over ranks (in double precision)."""
        return float(self.all_reduce(torch.tensor([value], dtype=torch.float64, device=self.device()))[0])

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable; e.g. rendered views), in rank order, on every rank."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        self._run("gather", lambda: dist.all_gather_object(out, obj))
        return out

    def broadcast(self, tensor: Tensor, src: int = 0) -> Tensor:
        """In place: every rank gets rank ``src``'s ``tensor``."""
        if self.active:
            self._run("broadcast", lambda: dist.broadcast(tensor, src=src))
        return tensor

    def barrier(self) -> None:
        """Wait until every rank gets here (e.g. after rank 0 wrote a file the others read)."""
        if self.active:
            # A tiny all-reduce instead of dist.barrier(): on NCCL a barrier guesses a device.
            self.all_reduce(torch.zeros(1, device=self.device()))

    def device(self) -> torch.device:
        """Where this group's collectives run: the rank's GPU for NCCL, else the CPU."""
        if self.active and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def share(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n``: every ``world``-th row from ``rank``."""
        return slice(self.rank, n, self.world)


SINGLE = Group()
"""One process: every collective is a no-op."""


def rank_device(device: torch.device, local_rank: int) -> torch.device:
    """The device a rank trains on: its own GPU (``LOCAL_RANK`` modulo the GPUs) for CUDA."""
    if device.type != "cuda":
        return device
    index = local_rank % max(1, torch.cuda.device_count())
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def init_from_env(device: torch.device) -> tuple[Group, torch.device]:
    """Join the process group a launcher described in the environment (``WORLD_SIZE`` > 1),
    with NCCL for a CUDA ``device`` (one GPU per local process) and gloo otherwise (collectives
    then go through the CPU); returns the group and this rank's device.
    Without a launcher: :data:`SINGLE` and ``device`` unchanged."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE, device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    timeout = _timeout_from_env()
    device = rank_device(device, local_rank)
    if not dist.is_initialized():
        # NCCL wants one GPU per process; more processes than GPUs share them through gloo.
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        backend = "nccl" if device.type == "cuda" and local_world <= torch.cuda.device_count() else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout), **kwargs)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise DistributedError(f"rank {rank}: cannot join the process group ({first})") from None
    return Group(rank, world, local_rank, timeout), device


def close(group: Group) -> None:
    """Leave the process group (at the end of a command)."""
    if group.active and dist.is_initialized():
        dist.destroy_process_group()


@runtime_checkable
class Sharded(Protocol):
    """A trainable whose ranks each hold only their part of the model while training."""

    def gather_shards(self) -> None:
        """Make the whole model current on every rank (a collective: every rank calls it)."""
        ...


def step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for ``rank``'s random draws at ``step``: a function of the three only, so a
    resumed run draws what the uninterrupted one would have, whatever the rank count was."""
    return (seed * 1_000_003 + step * 1009 + rank * 7919 + 1) % (1 << 62)


class DataParallel:
    """A ``Trainable`` (with ``optimizer`` and ``generator``) trained data-parallel over rays.

    Each rank draws the same global batch (the loop's generator is seeded alike everywhere),
    trains on its strided share of it and, right before the inner optimiser steps, its
    gradients are multiplied by its share of the rays and summed over ranks in one flat
    all-reduce: the gradient of the global batch's mean loss, as one process would compute it
    (a loss term that does not depend on the rays, such as an L2 penalty, is the same on every
    rank and comes out once). Parameters then stay equal on every rank. The inner trainable's
    own generator (sample jitter) is reseeded every step from (seed, step, rank).

    ``rows`` (a grid of ``rows`` networks, parameters batched along their first dimension):
    only the networks that received samples on some rank travel. Their union is found first
    (an all-reduce of ``rows`` flags, from the gradients of the parameters not in
    ``penalised``); a network no rank sampled has no data gradient anywhere, so its gradient is
    the rank-independent penalty gradient (of the ``penalised`` parameters) or zero, and stays
    local.
    """

    def __init__(self, inner: Any, group: Group, rows: int = 0, penalised: Sequence[Tensor] = ()) -> None:
        self.inner, self.group = inner, group
        self.rays_per_step = int(inner.rays_per_step)
        self.seed = int(inner.generator.initial_seed())
        self.rows = rows
        self.penalised = {id(p) for p in penalised}
        self.reduced_values = 0
        """Values in the last step's gradient all-reduce."""
        self.reduce_seconds = 0.0
        """Seconds spent in gradient all-reduces (packing included), summed over steps."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # field, student, uses_alpha, ... of the inner trainable

    def _sampled_rows(self, params: list[Tensor]) -> Tensor | None:
        """(R,) int64 networks with a data gradient on some rank (one small all-reduce)."""
        if self.rows <= 0 or not any(p.shape[0] == self.rows for p in params):
            return None
        hit = torch.zeros(self.rows, dtype=torch.bool, device=params[0].device)
        for p in params:
            if p.grad is not None and p.shape[0] == self.rows and id(p) not in self.penalised:
                hit |= (p.grad.reshape(self.rows, -1) != 0).any(1)
        hit = self.group.all_reduce(hit.to(torch.uint8).to(self.group.device()), op="max").to(params[0].device)
        return torch.nonzero(hit)[:, 0]

    def _reduce(self, optimizer: torch.optim.Optimizer, weight: float) -> None:
        t0 = time.perf_counter()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        sampled = self._sampled_rows(params)

        def part(p: Tensor) -> Tensor:  # what of p's gradient travels
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            return g if sampled is None or p.shape[0] != self.rows else g.index_select(0, sampled)

        # Flags first: a parameter no rank used keeps grad None (the optimiser then skips it).
        flags = [torch.full((1,), float(p.grad is not None), device=p.device) for p in params]
        parts = [part(p) for p in params]
        flat = torch.cat(flags + [t.reshape(-1) * weight for t in parts]).to(self.group.device())
        self.group.all_reduce(flat)
        self.reduced_values = flat.numel()
        offset = len(params)
        for k, (p, t) in enumerate(zip(params, parts)):
            n = t.numel()
            if float(flat[k]) > 0:
                summed = flat[offset : offset + n].view_as(t).to(p.device)
                if t.shape == p.shape:
                    p.grad = summed.clone()
                else:  # the networks no rank sampled keep their (rank-independent) local gradient
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad.index_copy_(0, sampled, summed)  # type: ignore[arg-type]
            offset += n
        self.reduce_seconds += time.perf_counter() - t0

    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Tensor | float]:
        """One step on this rank's share of the global batch (B, 3); metrics are this rank's."""
        part = self.group.share(origins.shape[0])
        weight = len(range(origins.shape[0])[part]) / max(1, origins.shape[0])
        self.inner.generator.manual_seed(step_seed(self.seed, step, self.group.rank))

        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            if optimizer is self.inner.optimizer:  # the inner trainer may rebuild its optimiser
                self._reduce(optimizer, weight)

        handle = register_optimizer_step_pre_hook(hook)
        try:
            return self.inner.train_step(step, origins[part], dirs[part], rgb[part])
        finally:
            handle.remove()

    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        return self.inner.render_rays(origins, dirs)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()  # the same on every rank

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state)


def reduce_metrics(group: Group, stats: dict[str, Tensor], summed: tuple[str, ...] = ()) -> dict[str, Tensor]:
    """Per-step metrics key -> (n,) over ranks: summed for the ``summed`` keys, else averaged."""
    if not group.active:
        return stats
    keys = list(stats)
    flat = group.all_reduce(torch.stack([stats[k] for k in keys]).to(group.device())).cpu()
    return {k: flat[i] if k in summed else flat[i] / group.world for i, k in enumerate(keys)}


def launch_local(nproc: int, command: list[str]) -> int:
    """Run ``command`` (a program and its arguments) as ``nproc`` local processes through
    torch's elastic launcher (what ``torchrun --standalone --nproc-per-node N`` does); returns
    0, or the exit code of a failed process (any failure stops the others)."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # our one line says what failed
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=0.5)  # fmt: skip
    try:
        elastic_launch(config, entrypoint=command[0])(*command[1:])
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = int(failure.exitcode)
        if code == 2:
            return 2  # that process already printed its one-line error
        raise DistributedError(
            f"process {rank} of {nproc} stopped with exit code {code}; the others were stopped; "
            "rerun the same command to resume from the last checkpoint"
        ) from None
    return 0
