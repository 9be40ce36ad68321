"""Training the paper's NeRF teacher on the photos (stage 1 of the pipeline)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.fields.nerf import NeRFField
from kilonerf.metrics.psnr import mse_to_psnr_tensor
from kilonerf.render.dense import BoxRenderer
from kilonerf.train.config.teacher import NeRFTeacherConfig





def nerf_field(config: NeRFTeacherConfig, scene: Scene) -> NeRFField:
    """The teacher's network for ``scene`` (random weights from the current RNG)."""
    diagonal = float(np.linalg.norm(scene.bbox[1] - scene.bbox[0]))
    return NeRFField(
        num_freqs_pos=config.num_freqs_pos, num_freqs_dir=config.num_freqs_dir, width=config.width,
        depth=config.depth, dir_width=config.dir_width,
        # A light initial fog across the box, so that most raw sigmas start positive.
        density_bias=config.init_density_scale / max(diagonal, 1e-6),
    )  # fmt: skip


class NeRFTeacherTrainer:
    """A :class:`NeRFField` with its Adam optimiser; implements ``kilonerf.train.trainable.Trainable``.

    Rays are sampled only inside the scene box (``ray_box_intersect``); rays that miss the box
    render as the background colour.
    """

    uses_alpha = False
    """Trains on the photos as composited (the paper's white background), never on their alpha."""

    def __init__(self, scene: Scene, config: NeRFTeacherConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.rays_per_step = config.rays_per_step
        with torch.random.fork_rng(devices=[]):
            # A fixed seed for the initial weights without disturbing the caller's RNG.
            torch.manual_seed(config.seed)
            self.field = nerf_field(config, scene).to(self.device)
        self.optimizer = torch.optim.Adam(self.field.parameters(), lr=config.lr)
        self.bbox = torch.as_tensor(scene.bbox, dtype=torch.float32, device=self.device)
        self.background = torch.as_tensor(scene.background, dtype=torch.float32, device=self.device)
        self.renderer = BoxRenderer(self.field, self.bbox, self.background, config.num_samples, config.eval_chunk_points,
                                    scene.ray_map)  # fmt: skip
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed + 1)
        self.step = 0
        """Optimisation steps taken so far."""

    def lr_at(self, step: int) -> float:
        c = self.config
        return c.lr * c.lr_decay_rate ** (step / c.lr_decay_steps)

    def render(self, origins: Tensor, dirs: Tensor, sampling: str) -> Tensor:
        """Differentiable render of world rays (N, 3) inside the scene box: rgb (N, 3)."""
        return self.renderer.render(origins, dirs, sampling, self.generator)[0]

    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Tensor]:
        """One Adam step on rays (B, 3) with targets (B, 3); returns 0-dim tensors loss, psnr."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at(step)
        self.field.train()
        out = self.render(origins, dirs, "stratified")
        loss = torch.mean((out - rgb) ** 2)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step = step + 1
        loss = loss.detach()
        return {"loss": loss, "psnr": mse_to_psnr_tensor(loss)}

    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Evaluation render at the bin centres: rays (N, 3) -> rgb (N, 3)."""
        self.field.eval()
        return self.renderer.render_rays(origins, dirs)

    def state_dict(self) -> dict[str, Any]:
        """Model, optimiser, jitter RNG, step and config: plain tensors and containers only."""
        return {
            "model": self.field.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
            "config": asdict(self.config),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = NeRFTeacherConfig.from_dict(state["config"])
        shape_keys = ("num_freqs_pos", "num_freqs_dir", "width", "depth", "dir_width")
        mismatch = [k for k in shape_keys if getattr(saved, k) != getattr(self.config, k)]
        if mismatch:
            raise RunError(f"teacher checkpoint has a different network ({', '.join(mismatch)} differ)")
        self.field.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])

