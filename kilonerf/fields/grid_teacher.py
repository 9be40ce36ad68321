"""The fast teacher: a dense voxel radiance field (DVGO-style) that trains in minutes on CPU.

Design, and why (measured on 2 CPU cores, Lego 100 x 100; see benchmarks/teacher_curve.py):

- **Density**: one dense grid of raw values, trilinearly interpolated *before* the softplus
  activation ("post-activation", DVGO). A single channel is the cheapest thing to gather and
  scatter, and post-activation interpolation gives sharp surfaces from a coarse lattice, so
  the density can afford the finest resolution.
- **Colour**: a ``feature_dim``-channel feature grid, decoded by a small MLP that also sees the
  positionally encoded view direction. The first three features are a diffuse colour logit
  and the MLP adds a view-dependent residual (``rgb = sigmoid(f[:3] + mlp(f, PE(d)))``), so
  the grid alone explains diffuse colour early in training while the MLP learns speculars.
  The MLP costs ~7 kFLOP per sample but only runs where a sample's compositing weight is
  non-negligible (see the trainer), typically a handful of samples per ray.
- **Box**: the grids span ``box_min .. box_max``; points outside have zero density. The
  trainer starts on the scene's box at low resolution, then shrinks ``box_min/max`` to the
  occupied region (:meth:`occupied_bbox`) and resamples; later stages can read the box.
- **Occupancy**: a bitfield over the density lattice's cells, refreshed from the field's own
  density (:meth:`update_occupancy`). Because the activation is monotonic and applied after
  interpolation, a cell whose eight corner nodes are all below the threshold is below it
  everywhere, so skipping it is exact up to the threshold.

Everything is plain tensors, so the field has no dependence on ray context: ``density`` and
``forward`` work at arbitrary points (the distillation stage queries it that way).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kilonerf.kernels.encoding import encoded_dim, positional_encoding
from kilonerf.fields.grid_sampling import corner_weights, resample_grid, to_lattice
from kilonerf.kernels.grid_ops import grid_lerp


FEATURE_LAYOUT = 1
"""Feature grids are stored (Rz, Ry, Rx, C); state dicts without ``feature_layout`` hold the
earlier (C, Rz, Ry, Rx)."""


def upgrade_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A field state dict in the current layout (channel-first feature grids transposed)."""
    if "feature_layout" in state:
        return state
    state = dict(state)
    state["feature_grid"] = state["feature_grid"].permute(1, 2, 3, 0).contiguous()
    state["feature_layout"] = torch.tensor(FEATURE_LAYOUT)
    return state


def lattice_shape(box_min: Tensor, box_max: Tensor, longest: int,
                  aspect: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> tuple[int, int, int]:  # fmt: skip
    """(Rx, Ry, Rz) node counts giving cells of about the shape ``aspect`` (cubic by default),
    ``longest`` nodes on the axis that gets the most."""
    ext = [e / a for e, a in zip((box_max - box_min).tolist(), aspect)]
    cell = max(ext) / (longest - 1)
    return tuple(max(2, int(round(e / cell)) + 1) for e in ext)  # type: ignore[return-value]


class GridTeacherField(nn.Module):
    """Dense density grid + feature grid + small view-dependent MLP; a ``RadianceField``."""

    def __init__(self, box_min: Tensor, box_max: Tensor, density_res: int = 64, feature_res: int = 64,
                 feature_dim: int = 12, hidden: int = 64, dir_freqs: int = 4, sigma_init: float = 0.1,
                 density_scale: float = 1.0, cell_aspect: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> None:
        super().__init__()
        self.cell_aspect = cell_aspect
        """Relative cell length per axis for new lattices (:func:`lattice_shape`)."""
        self.feature_dim = feature_dim
        self.dir_freqs = dir_freqs
        # sigma = scale * softplus(raw + shift). The scale (DVGO's 1 / base voxel size) lets
        # Adam's ~lr-sized steps on raw values reach opaque densities in tens of steps;
        # softplus(0 + shift) = sigma_init / scale, so a zero grid has density sigma_init.
        # Buffers (not attributes) so a state dict alone rebuilds the field (from_state_dict).
        self.register_buffer("density_affine", torch.tensor(
            [float(density_scale), math.log(math.expm1(sigma_init / density_scale))], dtype=torch.float64))
        self.register_buffer("box_min", torch.as_tensor(box_min, dtype=torch.float32).clone())
        self.register_buffer("box_max", torch.as_tensor(box_max, dtype=torch.float32).clone())
        dres = lattice_shape(self.box_min, self.box_max, density_res, cell_aspect)
        fres = lattice_shape(self.box_min, self.box_max, feature_res, cell_aspect)
        self.density_grid = nn.Parameter(torch.zeros(1, dres[2], dres[1], dres[0]))
        # Channels-last: a lookup reads 8 contiguous node rows (kernels/grid_ops.py).
        self.feature_grid = nn.Parameter(torch.zeros(fres[2], fres[1], fres[0], feature_dim))
        self.register_buffer("feature_layout", torch.tensor(FEATURE_LAYOUT))
        """Marks the channels-last feature grid in state dicts (see :func:`upgrade_state`)."""
        self.register_buffer("occupancy", torch.ones(dres[2] - 1, dres[1] - 1, dres[0] - 1, dtype=torch.bool))
        self.register_buffer("use_mlp", torch.tensor(True))
        """False: colour is the diffuse ``sigmoid(f[:3])`` alone (cheap coarse phase)."""
        in_dim = feature_dim + encoded_dim(3, dir_freqs)
        # mlp[0] is applied by hand in ``color`` (split into feature and direction columns).
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3))
        # A zero last layer makes the initial colour the diffuse grid's alone.
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], dir_freqs: int = 4) -> "GridTeacherField":
        """Rebuild a field of the saved shapes from :meth:`state_dict` output."""
        state = upgrade_state(state)
        feat = state["feature_grid"]
        hidden = state["mlp.0.weight"].shape[0]
        field = cls(state["box_min"], state["box_max"], 2, 2, feat.shape[-1], hidden, dir_freqs)
        field.set_grids(state["box_min"], state["box_max"], state["density_grid"].clone(), feat.clone())
        field.load_state_dict(state)
        return field

    @property
    def density_scale(self) -> float:
        return float(self.density_affine[0])

    @property
    def density_shift(self) -> float:
        return float(self.density_affine[1])

    # ---- shapes -------------------------------------------------------------------------
    @property
    def density_res(self) -> tuple[int, int, int]:
        """(Rx, Ry, Rz) density lattice nodes."""
        s = self.density_grid.shape
        return (s[3], s[2], s[1])

    @property
    def feature_res(self) -> tuple[int, int, int]:
        s = self.feature_grid.shape
        return (s[2], s[1], s[0])

    @property
    def bbox(self) -> Tensor:
        """(2, 3) the box the grids span (min, max): after training, a tight box around the
        object ("bbox from the teacher") that later stages can use instead of the scene's."""
        return torch.stack([self.box_min, self.box_max])

    @property
    def voxel_size(self) -> float:
        """Largest density-lattice spacing in world units."""
        res = torch.tensor(self.density_res, dtype=torch.float32) - 1
        return float(((self.box_max - self.box_min).cpu() / res).max())

    @torch.no_grad()
    def resize(self, box_min: Tensor, box_max: Tensor, density_res: int, feature_res: int) -> None:
        """Resample both grids into a new box / resolution (trilinear on raw values).

        New nodes outside the old box get empty density and zero features. The occupancy is
        reset to all-occupied; call :meth:`update_occupancy` afterwards. Replaces the grid
        ``Parameter`` objects, so optimisers holding them must be rebuilt.
        """
        box_min = torch.as_tensor(box_min, dtype=torch.float32, device=self.box_min.device)
        box_max = torch.as_tensor(box_max, dtype=torch.float32, device=self.box_min.device)
        dres = lattice_shape(box_min, box_max, density_res, self.cell_aspect)
        fres = lattice_shape(box_min, box_max, feature_res, self.cell_aspect)
        dens = resample_grid(self.density_grid.data, self.box_min, self.box_max, box_min, box_max, dres,
                             self.empty_raw)
        feat = resample_grid(self.feature_grid.data.permute(3, 0, 1, 2), self.box_min, self.box_max, box_min,
                             box_max, fres, 0.0)
        self.set_grids(box_min, box_max, dens, feat.permute(1, 2, 3, 0))

    def set_grids(self, box_min: Tensor, box_max: Tensor, density: Tensor, features: Tensor) -> None:
        """Install grids of any shape: density (1, Rz, Ry, Rx), features (Rz', Ry', Rx', C)."""
        self.box_min.copy_(box_min)
        self.box_max.copy_(box_max)
        self.density_grid = nn.Parameter(density.contiguous())
        self.feature_grid = nn.Parameter(features.contiguous())
        rz, ry, rx = density.shape[1:]
        self.occupancy = torch.ones(rz - 1, ry - 1, rx - 1, dtype=torch.bool, device=density.device)

    # ---- queries ------------------------------------------------------------------------
    def _inside(self, points: Tensor) -> Tensor:
        return ((points >= self.box_min) & (points <= self.box_max)).all(-1)

    def raw_density(self, points: Tensor) -> Tensor:
        """(N, 3) -> (N,) pre-activation density (clamped at the box faces)."""
        lat = to_lattice(points, self.box_min, self.box_max, self.density_res)
        idx, w = corner_weights(lat, self.density_res)
        return grid_lerp(self.density_grid, 1, idx, w)[:, 0]

    def activate(self, raw: Tensor) -> Tensor:
        return self.density_scale * F.softplus(raw + self.density_shift)

    def density(self, points: Tensor) -> Tensor:
        """points (N, 3) -> sigma (N,) >= 0, zero outside the box."""
        sigma = self.activate(self.raw_density(points))
        return torch.where(self._inside(points), sigma, torch.zeros_like(sigma))

    def color(self, points: Tensor, dirs: Tensor, ray_index: Tensor | None = None) -> Tensor:
        """Colour at points.

        Args:
            points: (N, 3).
            dirs: (N, 3) unit directions, or (R, 3) per-ray directions when ``ray_index`` (N,)
                says which ray each point belongs to (the renderer's case: the direction part of
                the first MLP layer is then computed once per ray instead of once per sample).
        Returns:
            rgb (N, 3) in [0, 1].
        """
        lat = to_lattice(points, self.box_min, self.box_max, self.feature_res)
        idx, w = corner_weights(lat, self.feature_res)
        feat = grid_lerp(self.feature_grid, self.feature_dim, idx, w)
        if not bool(self.use_mlp):
            return torch.sigmoid(feat[:, :3])
        first = self.mlp[0]
        # Linear([feat, PE(d)]) split into its feature and direction columns.
        w_feat, w_dir = first.weight[:, :self.feature_dim], first.weight[:, self.feature_dim:]
        dir_term = torch.addmm(first.bias, positional_encoding(dirs, self.dir_freqs), w_dir.t())
        if ray_index is not None:
            dir_term = dir_term.index_select(0, ray_index)
        h = torch.relu(torch.addmm(dir_term, feat, w_feat.t()))
        return torch.sigmoid(feat[:, :3] + self.mlp[2:](h))

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """points (N, 3), unit dirs (N, 3) -> sigma (N,), rgb (N, 3)."""
        return self.density(points), self.color(points, dirs)

    # ---- occupancy and box --------------------------------------------------------------
    @torch.no_grad()
    def node_density(self) -> Tensor:
        """(Rz, Ry, Rx) sigma at the density lattice nodes."""
        return self.activate(self.density_grid[0])

    @torch.no_grad()
    def update_occupancy(self, sigma_threshold: float) -> float:
        """Mark cells with any corner node above ``sigma_threshold``; returns the occupied fraction."""
        above = (self.node_density() > sigma_threshold).float()[None, None]
        self.occupancy = F.max_pool3d(above, kernel_size=2, stride=1)[0, 0] > 0
        return float(self.occupancy.float().mean())

    @torch.no_grad()
    def prune(self, sigma_threshold: float) -> None:
        """Set nodes whose density is below the threshold to (numerically) zero density."""
        low = self.node_density() < sigma_threshold
        self.density_grid.data[0].masked_fill_(low, self.empty_raw)

    @property
    def empty_raw(self) -> float:
        """Raw grid value of empty space: softplus(-20) ~ 2e-9 (times the scale)."""
        return -20.0 - self.density_shift

    @torch.no_grad()
    def occupied_bbox(self, sigma_threshold: float, margin_cells: float = 1.5) -> Tensor:
        """(2, 3) box around the nodes with sigma above the threshold.

        The node mask is first opened (eroded, then dilated, 3 x 3 x 3) so isolated floaters of
        a young field do not inflate the box; the result is padded by ``margin_cells`` density
        cells and clipped to the current box (the whole box if nothing survives).
        """
        above = (self.node_density() > sigma_threshold).float()[None, None]
        eroded = -F.max_pool3d(-above, kernel_size=3, stride=1, padding=1)
        opened = F.max_pool3d(eroded, kernel_size=3, stride=1, padding=1)[0, 0] > 0
        nodes = torch.nonzero(opened)
        if nodes.shape[0] == 0:
            return self.bbox
        res = torch.tensor(self.density_res, dtype=torch.float32, device=nodes.device)
        cell = (self.box_max - self.box_min) / (res - 1)
        xyz = nodes.flip(-1).float()  # (z, y, x) -> (x, y, z)
        lo = self.box_min + (xyz.min(0).values - margin_cells) * cell
        hi = self.box_min + (xyz.max(0).values + margin_cells) * cell
        return torch.stack([torch.maximum(lo, self.box_min), torch.minimum(hi, self.box_max)])
