"""Stage 4: fine-tune the tiny MLPs on the photos (also the ``--no-distill`` from-scratch ablation).

Rays get ``num_samples`` stratified samples between their entry into and exit from the network
grid's box (clipped to the scene's near/far). Only samples in occupied voxels are evaluated
(``render_dense``'s ``sample_mask``); the others contribute nothing, exactly as at render time,
and skipping them is what makes a training step affordable.

Loss: MSE(rgb) + ``l2_weight`` x the sum of the L2 norms (not squared) of the view-dependent
parameter tensors (direction layer and RGB layer, weights and biases); the optimiser adds the
norms' gradient itself (:func:`l2_decay`). Each of those tensors holds one layer of every
network, so the norm is taken over all networks together, as the original's batched layers
did. Adam, lr(step) = lr x lr_decay_rate ^ (step / lr_decay_steps).

The ``cpu`` preset (lego at 100 px on two cores) trains on 1024 rays x 192 samples per step
and decays the learning rate by 10x over its own 800 steps instead of the paper's 500k.
Measured on lego_100 (fast grid teacher at 29.97 dB on all 100 val views, occupancy 21% of
voxels): distill ``cpu`` 107 s (student 28.99 dB), then this preset 132 s at ~165 ms/step
(student 30.66 dB): about 4 minutes for both stages.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor
from torch.autograd.graph import increment_version

from kilonerf.data.cameras import clip_to_box
from kilonerf.data.scene import Scene
from kilonerf.fields.multinet import MultiNetField
from kilonerf.metrics.psnr import mse_to_psnr_tensor
from kilonerf.render.dense import render_dense
from kilonerf.render.volume import join_pieces
from kilonerf.render.student import StudentRenderer
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.train.config.student import FinetuneConfig
from kilonerf.train.lazy_adam import LazyRowAdam


def view_dependent_l2(student: MultiNetField) -> Tensor:
    """Sum of the (unsquared) L2 norms of the view-dependent parameter tensors (0-dim)."""
    return torch.stack([p.norm() for p in student.view_dependent_parameters()]).sum()


@torch.no_grad()
def l2_decay(student: MultiNetField, l2_weight: float) -> tuple[Tensor, dict[Tensor, float]]:
    """The L2 term's value (0-dim, :func:`view_dependent_l2`) and its gradient as the optimiser
    applies it: per tensor p, ``l2_weight * p / ||p||`` (0 at p = 0, as autograd's)."""
    params = student.view_dependent_parameters()
    norms = [p.norm() for p in params]
    return torch.stack(norms).sum(), {p: l2_weight / float(n) if float(n) > 0 else 0.0 for p, n in zip(params, norms)}


class FinetuneTrainer:
    """Photometric fine-tuning of a :class:`MultiNetField` as a ``Trainable``.

    Args:
        student: distilled, or freshly initialised for the no-distillation ablation; its
            density activation is set to ReLU.
        occupancy: samples outside its occupied voxels are neither evaluated nor composited
            (None: every sample inside the box is evaluated).
        scene: near/far (clip the box segment) and background.
    """

    def __init__(self, student: MultiNetField, occupancy: OccupancyGrid | None, scene: Scene,
                 config: FinetuneConfig, device: torch.device | str = "cpu") -> None:  # fmt: skip
        self.config, self.device = config, torch.device(device)
        self.rays_per_step = config.rays_per_step
        self.student = student.to(self.device)
        self.background = torch.as_tensor(scene.background, dtype=torch.float32, device=self.device)
        self.renderer = StudentRenderer(self.student, occupancy, scene, config.render_samples, config.render_chunk_rays)
        # Per network: a step samples a third of them or fewer, and only they (and the view-dependent
        # layers, through the L2 term) get a gradient (kilonerf.train.lazy_adam). A demo step timed
        # alone: 79.1 -> 75.4 ms; whole runs: within their spread (docs/benchmarks.md).
        params = list(self.student.parameters())
        self.optimizer = LazyRowAdam([{"params": params, "lr": config.lr}], rows={p: p[0].numel() for p in params})
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed + 3)
        self.step = 0

    def lr_at(self, step: int) -> float:
        c = self.config
        return c.lr * c.lr_decay_rate ** (step / c.lr_decay_steps)

    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Tensor]:
        """One Adam step on rays (B, 3) with target colours (B, 3)."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        # Stratified samples from box entry to exit (within the scene's near and far), as the
        # dense reference places them, with the occupancy grid as the mask.
        rays = self.renderer.field_rays(origins, dirs)
        near, far = clip_to_box(rays.origins, rays.dirs, self.student.bbox, rays.near, rays.far)
        # Pieces are padded to the most any ray of the batch has; only those of some length are sampled.
        live = torch.nonzero(far > near).squeeze(1) if rays.pieces > 1 else None
        o, d = (rays.origins, rays.dirs) if live is None else (rays.origins[live], rays.dirs[live])
        lo, hi = (near, far) if live is None else (near[live], far[live])
        out = render_dense(self.student, o, d, lo, hi, self.config.num_samples, None,
                           sampling="stratified", generator=self.generator, sample_mask=self.renderer.mask)  # fmt: skip
        colour, acc = out.rgb, out.acc
        if live is not None:
            colour = colour.new_zeros(near.shape[0], 3).index_put((live,), colour)
            acc = acc.new_zeros(near.shape[0]).index_put((live,), acc)
        pred, _ = join_pieces(colour, acc, rays.pieces, self.background)
        mse = torch.mean((pred - rgb) ** 2)
        # The L2 term's gradient is added by the optimiser (LazyRowAdam.decay): through autograd
        # it took a norm's backward and a whole-tensor gradient per step (demo: 44.1 -> 39.7 ms
        # a step, docs/benchmarks.md).
        l2, self.optimizer.decay = l2_decay(self.student, self.config.l2_weight)
        loss = mse + self.config.l2_weight * l2
        self.optimizer.zero_grad(set_to_none=True)
        if mse.requires_grad:  # not when no ray of the batch met an occupied sample
            mse.backward()
        self.optimizer.step()
        # The compiled Adam writes the parameters without bumping their version counters, which
        # caches of derived weights (the compiled backend's bf16 tiles) use to notice an update.
        for prm in self.student.parameters():
            increment_version(prm)
        self.step = step + 1
        mse = mse.detach()
        return {"loss": loss.detach(), "psnr": mse_to_psnr_tensor(mse), "mse": mse, "l2": l2.detach()}

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Validation render (fast renderer, ReLU density): rays (N, 3) -> rgb (N, 3)."""
        return self.renderer.render(origins, dirs)

    def state_dict(self) -> dict[str, Any]:
        return {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "step": self.step, "config": asdict(self.config)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        FinetuneConfig.from_dict(state["config"])  # a malformed config is a RunError
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])
