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
from kilonerf.kernels.adam import indexed_adam_
from kilonerf.kernels.base import MultiNetParams
from kilonerf.occupancy.grid import PAPER_REF_STEP, OccupancyGrid, reference_step
from kilonerf.render.student import StudentRenderer
from kilonerf.train.config.student import DistillConfig
from kilonerf.train.distributed import SINGLE, Group


class RowAdam:
    """Adam over batched per-network tensors (leading dim = network) that updates only given rows."""

    def __init__(self, params: list[Tensor], lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(params[0].shape[0], dtype=torch.int64, device=params[0].device)

    @torch.no_grad()
    def step(self, rows: Tensor, grads: list[Tensor] | None = None, shard: tuple[Tensor, Tensor] | None = None) -> None:
        """Adam update of ``rows`` (R,) int64 from ``grads`` (each (R, ...), the rows' gradients
        in the order of ``rows``), or from the parameters' full ``.grad`` when None.

        One rank of a sharded run passes ``shard`` = (the step's rows on every rank (S,), the
        positions of ``rows`` among them (R,)): every rank counts every row's steps, and the
        bias corrections are computed over all S rows as one process does (vectorised and
        scalar ``pow`` differ in the last bit), so that the update is bit-identical."""
        b1, b2 = self.betas
        counted = rows if shard is None else shard[0]
        self.steps[counted] += 1
        t = self.steps[counted].to(self.params[0].dtype)
        bc1, bc2 = 1.0 - b1**t, 1.0 - b2**t
        if shard is not None:
            bc1, bc2 = bc1.index_select(0, shard[1]), bc2.index_select(0, shard[1])
        if grads is None:
            grads = [p.grad.index_select(0, rows) for p in self.params]
        for p, m, v, g in zip(self.params, self.exp_avg, self.exp_avg_sq, grads):
            indexed_adam_(p, g, m, v, rows, bc1, bc2, self.lr, self.betas, self.eps)

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

    def sample(self, nets: Tensor, per_net: int, occupied_fraction: float, gen: torch.Generator,
               keep: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Points for networks ``nets`` (B,), ``per_net`` each, grouped by network.

        ``keep`` (K,) int64: the positions in ``nets`` to return points for. Every network's
        random numbers are drawn all the same, so a network's points do not depend on which
        others are kept (a rank of a sharded distillation keeps its own).

        Returns:
            local (K, P, 3) in [-1, 1], world (K, P, 3), unit dirs (K, P, 3); K = B without ``keep``.
        """
        dev, b = nets.device, nets.shape[0]
        u = torch.rand(b, per_net, 3, device=dev, generator=gen)
        n_occ = int(round(occupied_fraction * per_net)) if self.voxels.numel() else 0
        if n_occ > 0:
            r = torch.rand(b, n_occ, device=dev, generator=gen)
            w = torch.rand(b, n_occ, 3, device=dev, generator=gen)
        dirs = torch.randn(b, per_net, 3, device=dev, generator=gen)
        if keep is not None:
            nets, u, dirs = nets[keep], u[keep], dirs[keep]
            if n_occ > 0:
                r, w = r[keep], w[keep]
        c_lo, c_hi = self.grid.cell_bounds(nets)
        if n_occ > 0:
            count = self.count[nets]
            pick = self.start[nets][:, None] + torch.minimum((r * count[:, None]).long(), (count - 1).clamp_min(0)[:, None])
            v_lo, v_hi = self._voxel_bounds(self.voxels[pick.clamp_max(self.voxels.numel() - 1)])
            lo, hi = torch.maximum(v_lo, c_lo[:, None]), torch.minimum(v_hi, c_hi[:, None])
            u_occ = ((lo + w * (hi - lo) - c_lo[:, None]) / (c_hi - c_lo)[:, None]).clamp(0.0, 1.0)
            u[:, :n_occ] = torch.where((count > 0)[:, None, None], u_occ, u[:, :n_occ])
        world = c_lo[:, None] + u * (c_hi - c_lo)[:, None]
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
    summed_metrics = ("loss", "nets")
    """Metrics that add up over the ranks of a sharded run (the others are averaged)."""

    def __init__(self, teacher: RadianceField, student: MultiNetField, occupancy: OccupancyGrid | None,
                 config: DistillConfig, device: torch.device | str = "cpu", *, ref_step: float | None = None,
                 scene: Scene | None = None, group: Group = SINGLE) -> None:  # fmt: skip
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
        # Sharding (several ranks): the trained networks are dealt out in turn, each rank trains
        # its own and draws every network's random numbers, so that its networks see exactly
        # the points they would in one process; gather_shards() assembles the whole grid.
        self.group = group
        self.owner = torch.full((k,), -1, dtype=torch.int64, device=self.device)
        self.owner[self.active] = torch.arange(self.active.numel(), device=self.device) % group.world

    def _own(self, chunk: Tensor) -> Tensor | None:
        """Positions in ``chunk`` of this rank's networks (None: one process, all of them)."""
        if not self.group.active:
            return None
        return torch.nonzero(self.owner.index_select(0, chunk) == self.group.rank)[:, 0]

    @torch.no_grad()
    def gather_shards(self) -> None:
        """Every rank's trained networks and their Adam moments onto every rank (one
        all-reduce of the trained rows; a collective; the step counts are the same everywhere).
        Exact: the other ranks add -0.0 to each value."""
        if not self.group.active:
            return
        rows = self.active
        mine = (self.owner.index_select(0, rows) == self.group.rank)
        opt = self.optimizer
        tensors = [*opt.params, *opt.exp_avg, *opt.exp_avg_sq]
        parts = [torch.where(mine.view((-1,) + (1,) * (t.dim() - 1)), t.index_select(0, rows), -0.0)
                 .reshape(len(rows), -1) for t in tensors]  # fmt: skip
        flat = self.group.all_reduce(torch.cat(parts, dim=1).to(self.group.device())).to(self.device)
        offset = 0
        for t in tensors:
            n = t[0].numel()
            t.index_copy_(0, rows, flat[:, offset : offset + n].reshape((len(rows),) + t.shape[1:]))
            offset += n

    def nets_for_step(self, step: int) -> Tensor:
        """(B,) networks trained at ``step``: all trained ones, or a round-robin window."""
        n, total = self.config.nets_per_step, self.active.numel()
        if n == 0 or n >= total:
            return self.active
        return self.active[(step * n + torch.arange(n, device=self.device)) % total]

    def _loss_terms(self, nets: Tensor, per_net: int, gen: torch.Generator, params: MultiNetParams | None = None,
                    keep: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Per-network loss (B,), summed rgb and alpha squared errors (0-dim) on fresh points.

        ``params``: evaluate these B networks (network ``b`` standing for ``nets[b]``) instead
        of the student's own. ``keep``: only the networks at these positions of ``nets``
        (:meth:`CellSampler.sample`)."""
        frac = self.config.occupied_fraction if self.config.occupied_only else 0.0
        if keep is None:
            local, world, dirs = self.sampler.sample(nets, per_net, frac, gen)
        else:
            local, world, dirs = self.sampler.sample(nets, per_net, frac, gen, keep)
            nets = nets[keep]
        b = nets.shape[0]
        with torch.no_grad():
            t_sigma, t_rgb = self.teacher.forward(world.reshape(-1, 3), dirs.reshape(-1, 3))
            t_alpha = 1.0 - torch.exp(-torch.relu(t_sigma.float()) * self.ref_step)
            target = torch.cat([t_rgb.float(), t_alpha[:, None]], dim=-1).reshape(b, per_net, 4)
        net_idx = (nets if params is None else torch.arange(b, device=nets.device)).repeat_interleave(per_net)
        s_sigma, s_rgb = self.student.evaluate_local(net_idx, local.reshape(-1, 3), dirs.reshape(-1, 3),
                                                     activation=self.config.density_activation, params=params)  # fmt: skip
        s_alpha = 1.0 - torch.exp(-s_sigma * self.ref_step)
        sq = (torch.cat([s_rgb, s_alpha[:, None]], dim=-1).reshape(b, per_net, 4) - target) ** 2
        return sq.mean(dim=(1, 2)), sq[..., :3].detach().sum(), sq[..., 3].detach().sum()

    def _chunk_size(self, per_net: int) -> int:
        return max(1, self.config.chunk_points // per_net)

    def _chunks(self, nets: Tensor, per_net: int) -> list[Tensor]:
        return list(torch.split(nets, self._chunk_size(per_net)))

    def train_step(self, step: int, origins: Tensor, dirs: Tensor, rgb: Tensor) -> dict[str, Tensor]:
        """One optimiser step (the ray arguments are empty and ignored)."""
        nets, p = self.nets_for_step(step), self.config.points_per_net
        # Each chunk trains a copy of its networks, whose (B, ...) gradients are the step's: on
        # the student's own tensors autograd would allocate and add a full-size gradient per
        # chunk and tensor (ub_200, 4,113 of 12,672 networks: 1.00 -> 0.51 s a step). The copies'
        # gradient buffers are consecutive rows of one buffer per tensor for the whole step, which
        # the backends add into in place (kernels.row_gather.accumulates_in_place): no gradient
        # allocated per chunk, none concatenated (the demo's profile: ~4 ms of concatenation a
        # step gone; whole steps within their spread, docs/benchmarks.md).
        full = self.student.params()
        loss = torch.zeros((), device=self.device)
        rgb_se, alpha_se = torch.zeros((), device=self.device), torch.zeros((), device=self.device)
        chunks = [(start, chunk, self._own(chunk))
                  for start, chunk in zip(range(0, nets.numel(), self._chunk_size(p)), self._chunks(nets, p))]  # fmt: skip
        owns = [chunk if keep is None else chunk[keep] for _, chunk, keep in chunks]
        rows = sum(int(own.numel()) for own in owns)
        grads = [t.new_zeros((rows,) + t.shape[1:]) for t in (*full.weights, *full.biases)]
        mine: list[Tensor] = []
        keeps: list[Tensor] = []
        for (start, chunk, keep), own in zip(chunks, owns):
            if own.numel() == 0:  # none of this rank's: draw the chunk's random numbers all the same
                self.sampler.sample(chunk, p, self.config.occupied_fraction if self.config.occupied_only else 0.0,
                                    self.generator, keep)  # fmt: skip
                continue
            params = full.select(own).detach_requires_grad()
            row0 = sum(int(m.numel()) for m in mine)
            for t, g in zip((*params.weights, *params.biases), grads):
                t.grad = g[row0 : row0 + own.numel()]
            per_net, r, a = self._loss_terms(chunk, p, self.generator, params, keep)
            chunk_loss = per_net.sum()
            chunk_loss.backward()  # the loss is a sum over networks
            mine.append(own)
            keeps.append(keep + start if keep is not None else keep)
            loss, rgb_se, alpha_se = loss + chunk_loss.detach(), rgb_se + r, alpha_se + a
        if mine and not self.group.active:
            self.optimizer.step(nets, grads)
        elif mine:
            self.optimizer.step(torch.cat(mine), grads, shard=(nets, torch.cat(keeps)))
        else:
            self.optimizer.steps[nets] += 1  # every rank counts every network's steps
        self.step = step + 1
        n = max(1, sum(m.numel() for m in mine)) * p
        nets = torch.cat(mine) if mine else nets[:0]
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
        """The whole grid's state (a sharded run gathers it first: every rank calls this)."""
        self.gather_shards()
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
