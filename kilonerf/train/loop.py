"""The training loop every stage shares (teacher, distillation, fine-tuning).

Random ray batches across all training images, a progress bar, periodic validation, atomic
checkpoints that resume bit-identically, a time budget, and a clean stop on divergence.

Checkpoint layout (``torch.load(weights_only=True)``-safe)::

    {"format": CKPT_FORMAT, "stage": str, "step": int (steps done), "trainable": {...},
     "generator": uint8 tensor, "cpu_rng": uint8 tensor, "cuda_rng": [uint8 tensor, ...],
     "elapsed": float, "wall": float, "history": [record, ...], "loop_config": {...}}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from kilonerf.data.rays import RayTable
from kilonerf.errors import KiloNerfError, RunError
from kilonerf.io import atomic_torch_save, safe_torch_load
from kilonerf.metrics.psnr import mse_to_psnr
from kilonerf.train.config.loop import LoopConfig
from kilonerf.train.distributed import SINGLE, Group, Sharded, reduce_metrics
from kilonerf.train.trainable import Trainable

CKPT_FORMAT = "kilonerf-loop-1"

Record = dict[str, float]
"""One history entry: step, elapsed, wall, loss, psnr (+ other train metrics), val_psnr when measured."""


class TrainingDiverged(KiloNerfError):
    """The loss became NaN or infinite; the last good checkpoint on disk is left untouched."""


@dataclass
class TrainingResult:
    stage: str
    step: int
    """Optimisation steps done in total."""
    elapsed: float
    """Training seconds (validation and checkpoint writing excluded), summed over resumes."""
    wall: float
    stopped: str
    """``"max_steps"`` or ``"max_seconds"``."""
    history: list[Record] = field(default_factory=list)
    resumed_from: int | None = None

    @property
    def last_val_psnr(self) -> float | None:
        vals = [r["val_psnr"] for r in self.history if "val_psnr" in r]
        return vals[-1] if vals else None


def crop_pixel_ids(table: RayTable, frac: float) -> Tensor:
    """(K,) int64 table rows inside each image's central crop of relative size ``frac``.

    Rows y in [H//2 - dH, H//2 + dH) with dH = floor(H//2 * frac), likewise for x.
    """
    parts = []
    for k, (h, w) in enumerate(table.sizes):
        lo, hi = int(table.offsets[k]), int(table.offsets[k + 1])
        xy = table.pixel_xy[lo:hi].long()
        dh, dw = int(h // 2 * frac), int(w // 2 * frac)
        rows = (xy[:, 1] >= h // 2 - dh) & (xy[:, 1] < h // 2 + dh)
        keep = rows & (xy[:, 0] >= w // 2 - dw) & (xy[:, 0] < w // 2 + dw)
        parts.append(torch.nonzero(keep).squeeze(1) + lo)
    ids = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long, device=table.device)
    # Tiny images can have an empty crop: fall back to every pixel rather than fail.
    return ids if ids.numel() else torch.arange(len(table), device=table.device)


VAL_MAX_PIXELS = 1 << 16
"""Pixels of one view a validation renders at most (evenly strided beyond), so that validating
a megapixel capture costs what a small one does."""


def validation_psnr(trainable: Trainable, val_rays: RayTable, views: list[int]) -> float:
    """Mean over ``views`` of each image's PSNR (from its MSE; at most :data:`VAL_MAX_PIXELS`
    pixels of each), rendered by the trainable."""
    psnrs = []
    for k in views:
        origins, dirs, rgb = val_rays.image(k, VAL_MAX_PIXELS)
        pred = trainable.render_rays(origins, dirs).float().clamp(0.0, 1.0)
        psnrs.append(mse_to_psnr(float(torch.mean((pred - rgb) ** 2))))
    return sum(psnrs) / len(psnrs)


def _save(path: Path, state: dict[str, Any], gen: torch.Generator, stage: str, step: int,
          elapsed: float, wall: float, history: list[Record], config: LoopConfig) -> None:
    cuda = [s.cpu() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else []
    atomic_torch_save(path, {
        "format": CKPT_FORMAT, "stage": stage, "step": step, "trainable": state,
        "generator": gen.get_state(), "cpu_rng": torch.get_rng_state(), "cuda_rng": cuda,
        "elapsed": elapsed, "wall": wall, "history": [dict(r) for r in history], "loop_config": asdict(config),
    })  # fmt: skip


def _restore(
    path: Path, trainable: Trainable, gen: torch.Generator, stage: str
) -> tuple[int, float, float, list[Record]]:
    """Load a checkpoint into ``trainable`` and the RNGs; returns step, elapsed, wall, history."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise RunError(f"{path}: not a {CKPT_FORMAT} checkpoint")
    if ckpt["stage"] != stage:
        raise RunError(f"{path}: checkpoint of stage '{ckpt['stage']}', cannot resume stage '{stage}'")
    try:
        trainable.load_state_dict(ckpt["trainable"])
        gen.set_state(ckpt["generator"])
        torch.set_rng_state(ckpt["cpu_rng"])
        if ckpt["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        return int(ckpt["step"]), float(ckpt["elapsed"]), float(ckpt["wall"]), list(ckpt["history"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise RunError(f"{path}: cannot resume from this checkpoint ({type(exc).__name__}: {exc})") from exc


def _summarise(pending: list[dict[str, Any]], device: torch.device) -> dict[str, Tensor]:
    """Per-step metrics (tensors or floats) -> key -> (n,) CPU float tensor; one device sync."""
    keys = [k for k in pending[0] if all(k in m for m in pending)]
    stacked = torch.stack(
        [torch.as_tensor(m[k], dtype=torch.float32, device=device).reshape(()) for k in keys for m in pending]
    )
    return dict(zip(keys, stacked.cpu().reshape(len(keys), len(pending)).unbind(0)))


def eta_seconds(steps_left: int, seconds_per_step: float, wall: float, max_seconds: float | None) -> float:
    """Seconds until the stage ends: whichever comes first, the last step or the time budget."""
    eta = steps_left * seconds_per_step if steps_left > 0 else 0.0
    return eta if max_seconds is None else max(0.0, min(eta, max_seconds - wall))


def _fmt_eta(seconds: float) -> str:
    return tqdm.format_interval(max(0.0, seconds)) if math.isfinite(seconds) else "?"


def run_training(
    trainable: Trainable,
    train_rays: RayTable | None,
    val_rays: RayTable | None,
    config: LoopConfig,
    ckpt_path: str | Path,
    stage: str,
    log: Callable[[dict[str, Any]], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    group: Group = SINGLE,
) -> TrainingResult:
    """Train ``trainable`` until ``config.max_steps`` or ``config.max_seconds``; resume if possible.

    Each step draws ``trainable.rays_per_step`` rays (B, 3) uniformly over all pixels of
    ``train_rays`` (on its device) with a generator seeded by ``config.seed``; with
    ``rays_per_step == 0`` (or ``train_rays`` None) empty (0, 3) tensors are passed instead.
    If ``ckpt_path`` exists the run continues from it exactly as if it had never stopped.
    ``log`` receives every history record (plus ``"stage"``) as it is made; ``clock`` (seconds)
    times the steps and the budget (tests give it a clock of their own).

    With several ranks (``group``) every rank runs this loop on the same batches; the
    trainable splits the work (:class:`~kilonerf.train.distributed.DataParallel`, or sharded
    networks). Metrics are reduced over ranks when read back, validation views are split
    across ranks, rank 0 alone writes checkpoints, logs and the progress bar, and rank 0's
    clock decides the time budget. Every rank resumes from the same checkpoint.

    Raises:
        TrainingDiverged: the loss became non-finite; the checkpoint on disk is the last good one.
        RunError: ``ckpt_path`` exists but belongs to another stage or cannot be loaded.
    """
    return TrainingLoop(trainable, train_rays, val_rays, config, Path(ckpt_path), stage, log, clock, group).run()


class TrainingLoop:
    """One stage's training, step by step: :meth:`run` draws a batch (:meth:`batch`), takes a
    step, and every so often reads the metrics back (:meth:`flush`), validates
    (:meth:`validate`), reports (:meth:`emit`) and checkpoints (:meth:`save`)."""

    def __init__(self, trainable: Trainable, train_rays: RayTable | None, val_rays: RayTable | None,
                 config: LoopConfig, ckpt_path: Path, stage: str, log: Callable[[dict[str, Any]], None] | None,
                 clock: Callable[[], float], group: Group = SINGLE) -> None:  # fmt: skip
        self.group = group
        self.trainable, self.train_rays, self.val_rays, self.config = trainable, train_rays, val_rays, config
        self.ckpt_path, self.stage, self.log, self.clock = ckpt_path, stage, log, clock
        self.n_rays = int(trainable.rays_per_step)
        if self.n_rays > 0 and train_rays is None:
            raise KiloNerfError(
                f"{stage}: the model trains on {self.n_rays} rays per step but no training rays were given")
        self.device = train_rays.device if train_rays is not None else torch.device(getattr(trainable, "device", "cpu"))
        self.gen = torch.Generator(device=self.device)
        self.gen.manual_seed(config.seed)
        self.step, self.elapsed0, self.wall0 = 0, 0.0, 0.0
        self.history: list[Record] = []
        self.resumed_from: int | None = None
        if ckpt_path.exists():
            self.step, self.elapsed0, self.wall0, self.history = _restore(ckpt_path, trainable, self.gen, stage)
            self.resumed_from = self.step
        else:
            torch.manual_seed(config.seed)  # global RNG (also CUDA) for trainables that use it
        self.saved_step = self.step if self.resumed_from is not None else None
        self.start_step = self.step
        self.views: list[int] = []
        if val_rays is not None and config.val_views > 0 and val_rays.num_images > 0:
            self.views = sorted({int(v) for v in np.linspace(0, val_rays.num_images - 1, config.val_views).round()})
        self.crop = None
        if self.n_rays > 0 and self.step < config.precrop_steps:
            self.crop = crop_pixel_ids(train_rays, config.precrop_frac)  # type: ignore[arg-type]
        self.empty = torch.zeros(0, 3, device=self.device)
        self.pending: list[dict[str, Any]] = []
        self.t_start = clock()
        self.overhead = 0.0
        """Seconds this session spent validating and checkpointing."""

    def clocks(self) -> tuple[float, float]:
        """Training seconds (validation and checkpoints excluded) and wall seconds, resumes summed."""
        now = self.clock() - self.t_start
        return self.elapsed0 + now - self.overhead, self.wall0 + now

    def record_at(self, s: int) -> Record:
        if not self.history or self.history[-1]["step"] != s:
            elapsed, wall = self.clocks()
            self.history.append({"step": s, "elapsed": elapsed, "wall": wall})
        return self.history[-1]

    def batch(self) -> tuple[Tensor, Tensor, Tensor]:
        """The next step's rays: empty, from the central crop (precrop) or from every pixel."""
        c = self.config
        if self.n_rays == 0 or self.train_rays is None:
            return self.empty, self.empty, self.empty
        if self.crop is not None and self.step < c.precrop_steps:
            pick = torch.randint(0, self.crop.numel(), (self.n_rays,), device=self.device, generator=self.gen)
            return self.train_rays.rays(self.crop[pick])
        return self.train_rays.sample(self.n_rays, generator=self.gen)

    def flush(self) -> Record | None:
        """Read back pending metrics: divergence check and a history record."""
        if not self.pending:
            return None
        first = self.step - len(self.pending)
        stats = _summarise(self.pending, self.device)
        stats = reduce_metrics(self.group, stats, tuple(getattr(self.trainable, "summed_metrics", ())))
        self.pending.clear()
        loss = stats["loss"]
        bad = ~torch.isfinite(loss)
        if bool(bad.any()):
            k = int(torch.nonzero(bad)[0, 0])
            saved = self.saved_step
            where = f"{self.ckpt_path} (step {saved}) kept" if saved is not None else "no checkpoint written yet"
            raise TrainingDiverged(
                f"{self.stage}: loss is {float(loss[k])} at step {first + k}; last good checkpoint: {where}")
        rec = self.record_at(self.step)
        rec.update({k: float(v.mean()) for k, v in stats.items()})
        return rec

    def validate(self) -> None:
        t0 = self.clock()
        if self.group.active:
            if isinstance(self.trainable, Sharded):
                self.trainable.gather_shards()
            mine = self.views[self.group.share(len(self.views))]  # each rank renders its views
            total = validation_psnr(self.trainable, self.val_rays, mine) * len(mine) if mine else 0.0  # type: ignore
            psnr = self.group.sum(total) / len(self.views)
        else:
            psnr = validation_psnr(self.trainable, self.val_rays, self.views)  # type: ignore[arg-type]
        self.record_at(self.step)["val_psnr"] = psnr
        self.overhead += self.clock() - t0

    def save(self) -> None:
        t0 = self.clock()
        elapsed, wall = self.clocks()
        state = self.trainable.state_dict()  # on every rank: a sharded model is gathered
        if self.group.is_main:
            _save(self.ckpt_path, state, self.gen, self.stage, self.step, elapsed, wall, self.history, self.config)
        self.saved_step = self.step
        self.overhead += self.clock() - t0

    def emit(self, bar: tqdm) -> None:
        """The latest record to ``log`` and the progress bar (with the ETA)."""
        rec = self.history[-1]
        if self.log is not None and self.group.is_main:
            self.log({"stage": self.stage, **rec})
        elapsed, wall = self.clocks()
        done = self.step - self.start_step
        per_step = (elapsed - self.elapsed0) / done if done else math.inf
        eta = eta_seconds(self.config.max_steps - self.step, per_step, wall, self.config.max_seconds)
        text = f"loss={rec.get('loss', math.nan):.4g} psnr={rec.get('psnr', math.nan):.2f}"
        if "val_psnr" in rec:
            text += f" val={rec['val_psnr']:.2f}"
        bar.set_postfix_str(f"{text} eta={_fmt_eta(eta)}", refresh=False)

    def out_of_time(self, max_seconds: float) -> bool:
        """Whether the wall budget is spent (rank 0's clock decides for every rank)."""
        spent = torch.tensor([float(self.clocks()[1] >= max_seconds)], device=self.group.device())
        return bool(self.group.broadcast(spent)[0] > 0)

    def run(self) -> TrainingResult:
        c = self.config
        stopped = "max_steps"
        fmt = "{desc} {n_fmt}/{total_fmt} |{bar}| {elapsed} {rate_fmt} {postfix}"
        with tqdm(total=c.max_steps, initial=self.step, desc=self.stage, bar_format=fmt, unit="it",
                  disable=not c.progress or not self.group.is_main, dynamic_ncols=True) as bar:  # fmt: skip
            while self.step < c.max_steps:
                if c.max_seconds is not None and self.out_of_time(c.max_seconds):
                    stopped = "max_seconds"
                    break
                origins, dirs, rgb = self.batch()
                self.pending.append(self.trainable.train_step(self.step, origins, dirs, rgb))
                self.step += 1
                bar.update(1)
                step = self.step
                do_val = bool(self.views) and c.val_every > 0 and step % c.val_every == 0
                if step % c.log_every == 0 or step % c.ckpt_every == 0 or do_val:
                    self.flush()
                    if do_val:
                        self.validate()
                    self.emit(bar)
                if step % c.ckpt_every == 0:
                    self.save()
            changed = self.flush() is not None
            measured = bool(self.history) and self.history[-1]["step"] == self.step and "val_psnr" in self.history[-1]
            if self.views and self.step > self.start_step and not measured:
                self.validate()  # always end a stage with a validation score
                changed = True
            if changed:
                self.emit(bar)
        if self.saved_step != self.step:
            self.save()
        elapsed, wall = self.clocks()
        return TrainingResult(self.stage, self.step, elapsed, wall, stopped, list(self.history), self.resumed_from)
