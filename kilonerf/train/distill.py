"""Stage 3: distil a teacher radiance field into KiloNeRF's grid of tiny MLPs.

Each step draws ``points_per_net`` points in the cell of every trained network, each with a
uniform random unit direction, and regresses the student onto the teacher's colour and opacity
(alpha over the scene's reference step). Points are generated on the fly, ``chunk_points`` at
a time, and gradients accumulate over chunks before one optimiser step, so memory does not grow
with the number of networks (the original materialised its samples and ran out of host RAM).

Optimiser: Adam applied per network (:class:`RowAdam`): a network's moments and bias
correction advance only on steps that train it. With all networks trained every step (the
paper's setting) this is plain Adam; with round-robin subsets (``nets_per_step``) untouched
networks are not pushed around by stale momentum.

CPU option ``occupied_only`` (the ``cpu`` preset): networks whose cell holds no occupied voxel
of the (dilated) occupancy grid are skipped, and ``occupied_fraction`` of each cell's points are
drawn inside its occupied voxels, the rest uniform in the cell. The renderer never evaluates
empty voxels, so capacity and CPU time spent there are wasted.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from kilonerf.data.scene import Scene
from kilonerf.errors import KiloNerfError, RunError
from kilonerf.fields.base import RadianceField
from kilonerf.fields.multinet import MultiNetField
from kilonerf.occupancy.grid import PAPER_REF_STEP, OccupancyGrid, reference_step
from kilonerf.render.student import StudentRenderer
from kilonerf.train.config.student import DistillConfig





class RowAdam:
    """Adam over batched per-network tensors (leading dim = network) that updates only given rows."""

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(params[0].shape[0], dtype=torch.int64, device=params[0].device)

    @torch.no_grad()
    def step(self, rows: Tensor) -> None:
        """Adam update of ``rows`` (R,) int64 from the parameters' ``.grad``."""
        b1, b2 = self.betas
        self.steps[rows] += 1
        t = self.steps[rows].to(self.params[0].dtype)
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        if rows.numel() == self.steps.numel() and torch.equal(rows, torch.arange(rows.numel(), device=rows.device)):
            self._step_all(bc1, bc2)  # in place: no gather/scatter of every parameter
            return
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad.index_select(0, rows)
            m_r = m.index_select(0, rows).mul_(b1).add_(g, alpha=1.0 - b1)
            v_r = v.index_select(0, rows).mul_(b2).addcmul_(g, g, value=1.0 - b2)
            m.index_copy_(0, rows, m_r)
            v.index_copy_(0, rows, v_r)
            denom = (v_r / bc2.view(shape)).sqrt_().add_(self.eps)
            p.index_copy_(0, rows, p.index_select(0, rows) - self.lr * (m_r / bc1.view(shape)) / denom)

    def _step_all(self, bc1: Tensor, bc2: Tensor) -> None:
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            shape = (-1,) + (1,) * (p.dim() - 1)
            m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
            denom = v.sqrt().div_(bc2.sqrt().view(shape)).add_(self.eps)
            p.addcdiv_(m * (self.lr / bc1).view(shape), denom, value=-1.0)

    def state_dict(self) -> dict[str, Any]:
        return {"exp_avg": [m.clone() for m in self.exp_avg], "exp_avg_sq": [v.clone() for v in self.exp_avg_sq],
                "steps": self.steps.clone()}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        dev = self.steps.device
        self.exp_avg = [m.to(dev).clone() for m in state["exp_avg"]]
        self.exp_avg_sq = [v.to(dev).clone() for v in state["exp_avg_sq"]]
        self.steps = state["steps"].to(dev).clone()


class CellSampler:
    """Random points in network cells, optionally concentrated in occupied voxels.

    Occupied voxels are stored per network as CSR (voxel ids sorted by the network holding the
    voxel's centre); a voxel point is drawn in the voxel's intersection with that cell.
    """

    def __init__(self, student: MultiNetField, occupancy: OccupancyGrid | None, dilation: int) -> None:
        self.grid = student.grid
        device = student.bbox.device
        k = student.num_networks
        self.count = torch.zeros(k, dtype=torch.int64, device=device)
        self.voxels = torch.zeros(0, dtype=torch.int64, device=device)
        self.occupancy = occupancy
        if occupancy is not None:
            occ = occupancy.dilate(dilation) if dilation > 0 else occupancy
            self.occupancy = occ.to(device)
            vox = torch.nonzero(occ.to_dense().reshape(-1))[:, 0].to(device)
            lo, hi = self._voxel_bounds(vox)
            net, _ = self.grid.locate((lo + hi) * 0.5)
            keep = net >= 0
            net, vox = net[keep], vox[keep]
            order = torch.argsort(net, stable=True)
            self.voxels = vox[order]
            self.count = torch.bincount(net, minlength=k)
        self.start = torch.cumsum(self.count, 0) - self.count

    def _voxel_bounds(self, vox: Tensor) -> tuple[Tensor, Tensor]:
        occ = self.occupancy
        assert occ is not None
        rx, ry, rz = occ.res
        ijk = torch.stack([vox // (ry * rz), (vox // rz) % ry, vox % rz], dim=-1)
        size = occ.voxel_size.to(vox.device)
        lo = occ.bbox.to(vox.device)[0] + ijk.to(size.dtype) * size
        return lo, lo + size

    def sample(self, nets: Tensor, per_net: int, occupied_fraction: float, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Points for networks ``nets`` (B,), ``per_net`` each, grouped by network.

        Returns:
            local (B, P, 3) in [-1, 1], world (B, P, 3), unit dirs (B, P, 3).
        """
        dev, b = nets.device, nets.shape[0]
        c_lo, c_hi = self.grid.cell_bounds(nets)
        u = torch.rand(b, per_net, 3, device=dev, generator=gen)
        n_occ = int(round(occupied_fraction * per_net)) if self.voxels.numel() else 0
        if n_occ > 0:
            count = self.count[nets]
            r = torch.rand(b, n_occ, device=dev, generator=gen)
            pick = self.start[nets][:, None] + torch.minimum((r * count[:, None]).long(), (count - 1).clamp_min(0)[:, None])
            v_lo, v_hi = self._voxel_bounds(self.voxels[pick.clamp_max(self.voxels.numel() - 1)])
            lo, hi = torch.maximum(v_lo, c_lo[:, None]), torch.minimum(v_hi, c_hi[:, None])
            w = torch.rand(b, n_occ, 3, device=dev, generator=gen)
            u_occ = ((lo + w * (hi - lo) - c_lo[:, None]) / (c_hi - c_lo)[:, None]).clamp(0.0, 1.0)
            u[:, :n_occ] = torch.where((count > 0)[:, None, None], u_occ, u[:, :n_occ])
        world = c_lo[:, None] + u * (c_hi - c_lo)[:, None]
        dirs = torch.randn(b, per_net, 3, device=dev, generator=gen)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return u * 2.0 - 1.0, world, dirs


class DistillTrainer:
    """Teacher -> student distillation as a ``Trainable`` with ``rays_per_step = 0``.

    Args:
        teacher: any radiance field (evaluated without grad).
        student: the :class:`MultiNetField` to train (with ``config.density_activation``;
            :meth:`render_rays` renders with ReLU).
        occupancy: grid for ``occupied_only`` and for validation renders (optional).
        ref_step: step for alpha targets; default ``reference_step(scene.near, scene.far)``
            when a scene is given, else the paper's 0.0211.
        scene: near/far/background for :meth:`render_rays` (else box entry/exit, black).
    """

    rays_per_step = 0

    def __init__(self, teacher: RadianceField, student: MultiNetField, occupancy: OccupancyGrid | None,
                 config: DistillConfig, device: torch.device | str = "cpu", *, ref_step: float | None = None,
                 scene: Scene | None = None) -> None:  # fmt: skip
        if config.occupied_only and occupancy is None:
            raise KiloNerfError("distillation: occupied_only needs an occupancy grid")
        self.teacher, self.config, self.device = teacher, config, torch.device(device)
        self.student = student.to(self.device)
        if ref_step is None:
            ref_step = reference_step(scene.near, scene.far) if scene is not None else PAPER_REF_STEP
        self.ref_step = float(ref_step)
        self.sampler = CellSampler(self.student, occupancy if config.occupied_only else None, config.occupancy_dilation)
        k = self.student.num_networks
        self.active = torch.nonzero(self.sampler.count > 0)[:, 0] if config.occupied_only else torch.arange(k, device=self.device)
        if self.active.numel() == 0:
            raise KiloNerfError("distillation: the occupancy grid has no occupied voxel inside the network grid")
        self.renderer = StudentRenderer(self.student, occupancy, scene, config.render_samples, config.render_chunk_rays)
        self.optimizer = RowAdam(list(self.student.weights) + list(self.student.biases), lr=config.lr)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(config.seed + 2)
        self.step = 0

    def nets_for_step(self, step: int) -> Tensor:
        """(B,) networks trained at ``step``: all trained ones, or a round-robin window."""
        n, total = self.config.nets_per_step, self.active.numel()
        if n == 0 or n >= total:
            return self.active
        return self.active[(step * n + torch.arange(n, device=self.device)) % total]

    def _loss_terms(self, nets: Tensor, per_net: int, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Per-network loss (B,), summed rgb and alpha squared errors (0-dim) on fresh points."""
        local, world, dirs = self.sampler.sample(nets, per_net, self.config.occupied_fraction if self.config.occupied_only else 0.0, gen)
        b = nets.shape[0]
        with torch.no_grad():
            t_sigma, t_rgb = self.teacher.forward(world.reshape(-1, 3), dirs.reshape(-1, 3))
            t_alpha = 1.0 - torch.exp(-torch.relu(t_sigma.float()) * self.ref_step)
            target = torch.cat([t_rgb.float(), t_alpha[:, None]], dim=-1).reshape(b, per_net, 4)
        net_idx = nets.repeat_interleave(per_net)
        s_sigma, s_rgb = self.student.evaluate_local(net_idx, local.reshape(-1, 3), dirs.reshape(-1, 3),
                                                     activation=self.config.density_activation)  # fmt: skip
        s_alpha = 1.0 - torch.exp(-s_sigma * self.ref_step)
        sq = (torch.cat([s_rgb, s_alpha[:, None]], dim=-1).reshape(b, per_net, 4) - target) ** 2
        return sq.mean(dim=(1, 2)), sq[..., :3].detach().sum(), sq[..., 3].detach().sum()

    def _chunks(self, nets: Tensor, per_net: int) -> list[Tensor]:
        size = max(1, self.config.chunk_points // per_net)
        return list(torch.split(nets, size))

    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Tensor]:
        """One optimiser step (the ray arguments are empty and ignored)."""
        nets, p = self.nets_for_step(step), self.config.points_per_net
        for prm in self.optimizer.params:
            prm.grad = None
        loss = torch.zeros((), device=self.device)
        rgb_se, alpha_se = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        for chunk in self._chunks(nets, p):
            per_net, r, a = self._loss_terms(chunk, p, self.generator)
            chunk_loss = per_net.sum()
            chunk_loss.backward()  # accumulate: the loss is a sum over networks
            loss, rgb_se, alpha_se = loss + chunk_loss.detach(), rgb_se + r, alpha_se + a
        self.optimizer.step(nets)
        self.step = step + 1
        n = nets.numel() * p
        rgb_mse, alpha_mse = rgb_se / (3 * n), alpha_se / n
        return {"loss": loss, "psnr": -10.0 * torch.log10(rgb_mse), "rgb_mse": rgb_mse, "alpha_mse": alpha_mse,
                "nets": torch.tensor(float(nets.numel()))}  # fmt: skip

    @torch.no_grad()
    def heldout_metrics(self, points_per_net: int | None = None, seed: int = 20_000) -> dict[str, float]:
        """Distillation loss on a fixed held-out point set (same ``seed`` -> same points).

        Returns ``loss`` (per-network mean, summed over the trained networks, as in training),
        ``loss_per_net`` (its mean over networks), ``rgb_mse`` and ``alpha_mse`` over all points.
        """
        p = points_per_net or self.config.eval_points_per_net
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        loss = rgb_se = alpha_se = 0.0
        for chunk in self._chunks(self.active, p):
            per_net, r, a = self._loss_terms(chunk, p, gen)
            loss, rgb_se, alpha_se = loss + float(per_net.sum()), rgb_se + float(r), alpha_se + float(a)
        n = self.active.numel() * p
        return {"loss": loss, "loss_per_net": loss / self.active.numel(), "rgb_mse": rgb_se / (3 * n),
                "alpha_mse": alpha_se / n}  # fmt: skip

    @torch.no_grad()
    def render_rays(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Validation render of the student (ReLU density, fast renderer): rays (N, 3) -> rgb (N, 3)."""
        return self.renderer.render(origins, dirs)

    def state_dict(self) -> dict[str, Any]:
        return {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state(), "step": self.step, "config": asdict(self.config)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = DistillConfig.from_dict(state["config"])
        if saved.occupied_only != self.config.occupied_only:
            raise RunError("distillation checkpoint trained a different set of networks (occupied_only differs)")
        self.student.load_state_dict(state["student"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())
        self.step = int(state["step"])
