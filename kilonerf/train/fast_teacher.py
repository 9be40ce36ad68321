"""Training the fast grid teacher (:class:`GridTeacherField`) on the photos.

Schedule: a short coarse phase on the scene's own box finds where the object is; the grids
are then resampled into the tight box around it (``field.box_min/box_max``, the "bbox from
the teacher" later stages can use) and grown coarse-to-fine at the steps in
``FastTeacherConfig.res_schedule``. Rays are marched with a step of ``step_ratio`` density
cells through the occupancy bitfield; colour (feature gather + MLP) is evaluated only on
samples whose compositing weight exceeds ``color_weight_threshold`` (every sample in the
coarse phase, see :meth:`kilonerf.render.grid_teacher.GridTeacherRenderer.color_threshold`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from kilonerf.data.rays import recomposite
from kilonerf.data.scene import Scene
from kilonerf.errors import RunError
from kilonerf.render.packed import packed_distortion
from kilonerf.fields.grid_teacher import GridTeacherField, upgrade_state
from kilonerf.metrics.psnr import mse_to_psnr_tensor
from kilonerf.render.grid_teacher import GridTeacherRenderer, TeacherRender
from kilonerf.runtime import reuse_freed_memory
from kilonerf.train.config.teacher import FastTeacherConfig
from kilonerf.train.lazy_adam import LazyRowAdam


def grid_tv(grid: Tensor) -> Tensor:
    """Mean squared difference of neighbouring nodes along each axis of a (C, Rz, Ry, Rx) grid."""
    return ((grid[:, 1:] - grid[:, :-1]).square().mean() + (grid[:, :, 1:] - grid[:, :, :-1]).square().mean()
            + (grid[:, :, :, 1:] - grid[:, :, :, :-1]).square().mean())


class FastTeacherTrainer:
    """A :class:`GridTeacherField` with its optimiser and schedule; a ``Trainable``."""

    def __init__(self, scene: Scene, config: FastTeacherConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.rays_per_step = config.rays_per_step
        if config.retain_freed_memory:
            reuse_freed_memory()
        box = torch.as_tensor(scene.bbox, dtype=torch.float32, device=self.device)
        self.near, self.far = float(scene.near), float(scene.far)
        self.background = torch.as_tensor(scene.background, dtype=torch.float32, device=self.device)
        cell = float((box[1] - box[0]).max()) / (config.coarse_res - 1)
        sigma_init = -math.log1p(-config.alpha_init) / (config.step_ratio * cell)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            aspect = (1.0, 1.0, config.z_cell_ratio)
            self.field = GridTeacherField(box[0], box[1], config.coarse_res, config.coarse_res, config.feature_dim,
                                          config.hidden, config.dir_freqs, sigma_init, 1.0 / cell, aspect).to(self.device)
            self.field.use_mlp.fill_(False)
        self.renderer = GridTeacherRenderer(self.field, self.near, self.far, self.background, config.step_ratio,
                                            config.color_weight_threshold, config.eval_chunk_rays,
                                            ray_map=scene.ray_map, ert_threshold=config.ert_threshold)  # fmt: skip
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed + 1)
        self.optimizer = self._make_optimizer()
        self.step = 0
        self.stage = 0
        self.uses_alpha = config.random_background or config.mask_weight > 0
        """Whether :meth:`train_step` wants the photos' alpha (RGBA targets, see ``RayTable``)."""

    @property
    def stage(self) -> int:
        """How many ``res_schedule`` entries have been applied (0: the coarse phase)."""
        return self._stage

    @stage.setter
    def stage(self, value: int) -> None:
        self._stage = value
        self.renderer.coarse = value == 0

    # ---- schedule -----------------------------------------------------------------------
    def _make_optimizer(self, old: LazyRowAdam | None = None) -> LazyRowAdam:
        f, c = self.field, self.config
        opt = LazyRowAdam([
            {"params": [f.density_grid, f.feature_grid], "lr": c.lr_grid, "name": "grid"},
            {"params": list(f.mlp.parameters()), "lr": c.lr_mlp, "name": "mlp"},
        ], rows={f.density_grid: 1, f.feature_grid: f.feature_dim}, betas=(0.9, 0.99))
        if old is not None:  # keep the MLP's moments across grid resizes
            for p in self.field.mlp.parameters():
                if p in old.state:
                    opt.state[p] = old.state[p]
        return opt

    def lr_factor(self, step: int) -> float:
        return self.config.lr_final_factor ** (step / max(1, self.config.total_steps))

    def march_step(self) -> float:
        return self.renderer.march_step()

    def _apply_stage(self, stage: int) -> None:
        """Apply ``res_schedule[stage]``: shrink the box (first entry) and resample."""
        c = self.config
        _, dres, fres = c.res_schedule[stage]
        f = self.field
        if stage == 0:
            sigma = -math.log1p(-c.bbox_alpha) / f.voxel_size
            box = f.occupied_bbox(sigma, c.bbox_margin_cells)
        else:
            box = f.bbox
        f.resize(box[0], box[1], dres, fres)
        f.use_mlp.fill_(True)
        self.optimizer = self._make_optimizer(self.optimizer)
        self.stage = stage + 1
        self.update_occupancy()

    def update_occupancy(self) -> float:
        """Refresh the occupancy bitfield (and prune); returns the occupied fraction."""
        sigma = -math.log1p(-self.config.occupancy_alpha) / self.march_step()
        if self.config.prune:
            self.field.prune(sigma)
        return self.field.update_occupancy(sigma)

    # ---- rendering ----------------------------------------------------------------------
    def render(self, origins: Tensor, dirs: Tensor, jitter: Tensor | None,
               background: Tensor | None = None) -> TeacherRender:
        """Differentiable render (:meth:`GridTeacherRenderer.render`)."""
        return self.renderer.render(origins, dirs, jitter, background)

    def targets(self, rgb: Tensor) -> tuple[Tensor, Tensor | None]:
        """Training colours and the background to render them with.

        Args:
            rgb: (N, 3) composited on the scene's background, or (N, 4) with the alpha last.
        Returns:
            target (N, 3) and the per-ray background (N, 3), or None for the scene's own: with
            ``random_background`` and an alpha column, a uniform random colour per ray.
        """
        if not (self.config.random_background and rgb.shape[1] == 4):
            return rgb[:, :3], None
        bg = torch.rand(rgb.shape[0], 3, generator=self.generator, device=self.device)
        return recomposite(rgb[:, :3], rgb[:, 3], self.background, bg), bg

    # ---- Trainable ----------------------------------------------------------------------
    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Tensor]:
        """One step on rays (B, 3) and colours (B, 3), or (B, 4) RGBA when ``uses_alpha``."""
        c = self.config
        while self.stage < len(c.res_schedule) and step >= c.res_schedule[self.stage][0]:
            self._apply_stage(self.stage)
        if self.stage == 0:
            # Coarse phase: the whole scene box is marched (no occupancy yet) with fewer rays.
            origins, dirs, rgb = origins[:c.coarse_rays], dirs[:c.coarse_rays], rgb[:c.coarse_rays]
        elif step % c.occupancy_every == 0:
            self.update_occupancy()
        factor = self.lr_factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = (c.lr_grid if group["name"] == "grid" else c.lr_mlp) * factor
        jitter = torch.rand(origins.shape[0], generator=self.generator, device=self.device)
        photo_alpha = rgb[:, 3] if rgb.shape[1] == 4 else None
        rgb, background = self.targets(rgb)
        out = self.render(origins, dirs, jitter, background)
        n = origins.shape[0]
        mse = torch.mean((out.rgb - rgb) ** 2)
        loss = mse
        if c.mask_weight > 0 and photo_alpha is not None:
            loss = loss + c.mask_weight * torch.mean((out.acc - photo_alpha) ** 2)
        if c.sparsity_weight > 0:
            # Mean summed opacity per ray: drives faint fog in free space to zero (where the
            # photometric loss is indifferent) while saturating inside opaque surfaces.
            loss = loss + c.sparsity_weight * out.alpha.sum() / n
        if c.opacity_entropy_weight > 0:
            # Binary entropy of each ray's opacity: a ray either hits the object or not. Without
            # it, pale surfaces in front of the white background come out half transparent.
            a = out.acc.clamp(1e-6, 1 - 1e-6)
            loss = loss - c.opacity_entropy_weight * (a * torch.log(a) + (1 - a) * torch.log1p(-a)).mean()
        if c.distortion_weight > 0 and self.stage > 0:
            dist = packed_distortion(out.weights, out.samples.t, out.step, out.samples.ray_id, out.num_rays, out.start)
            loss = loss + c.distortion_weight * dist.mean()
        if c.tv_density > 0:
            loss = loss + c.tv_density * grid_tv(self.field.density_grid)
        if c.tv_features > 0 and self.stage > 0:
            loss = loss + c.tv_features * grid_tv(self.field.feature_grid.permute(3, 0, 1, 2))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step = step + 1
        mse = mse.detach()
        return {"loss": loss.detach(), "psnr": mse_to_psnr_tensor(mse), "samples_per_ray": torch.tensor(out.alpha.shape[0] / max(1, n))}

    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Evaluation render (samples at step centres): rays (N, 3) -> rgb (N, 3)."""
        return self.renderer.render_rays(origins, dirs)

    def state_dict(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["res_schedule"] = [list(e) for e in self.config.res_schedule]
        return {
            "model": self.field.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "step": self.step,
            "stage": self.stage,
            "config": cfg,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = FastTeacherConfig.from_dict(state["config"])
        shape = ("feature_dim", "hidden", "dir_freqs")
        if any(getattr(saved, k) != getattr(self.config, k) for k in shape):
            raise RunError("fast teacher checkpoint has a different network (feature_dim / hidden / dir_freqs differ)")
        model = upgrade_state(state["model"])
        self.field.set_grids(model["box_min"], model["box_max"], model["density_grid"].clone(),
                             model["feature_grid"].clone())  # shapes first: the grids grow in training
        self.field.load_state_dict(model)
        self.optimizer = self._make_optimizer()
        optimizer = state["optimizer"]
        if model is not state["model"]:  # channel-first features: their Adam moments too (parameter 1)
            moments = optimizer["state"].get(1, {})
            optimizer = {**optimizer, "state": {**optimizer["state"], 1: {
                k: v.permute(1, 2, 3, 0).contiguous() if k.startswith("exp_avg") else v for k, v in moments.items()}}}
        self.optimizer.load_state_dict(optimizer)
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])
        self.stage = int(state["stage"])
