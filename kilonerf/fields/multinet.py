"""KiloNeRF's student: a grid of tiny MLPs, one per cell of the scene box.

Per network: PE(local pos, 10) -> FC 32 -> ReLU -> FC 32 -> ReLU -> FC 33 (density, 32
features) -> concat(features, PE(dir, 4)) -> FC 32 -> ReLU -> FC 3 -> sigmoid; 6212
parameters. The parameters of all networks live in one tensor per layer with a leading network
dimension (see :class:`kilonerf.kernels.base.MultiNetParams`), and evaluation goes through a
grouped backend chosen by name (:func:`kilonerf.kernels.get_backend`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from kilonerf.errors import KiloNerfError
from kilonerf.fields.network_grid import NetworkGrid, grid_resolution
from kilonerf.kernels import GroupedBackend, MultiNetParams, get_backend
from kilonerf.kernels.base import layer_shapes

DENSITY_ACTIVATIONS = ("relu", "leaky_relu")


def activate_density(raw: Tensor, activation: str = "relu") -> Tensor:
    """Raw network output -> sigma. ``relu`` renders (and fine-tunes); ``leaky_relu`` is the
    original's activation while distilling. The caller says which: the model stores none."""
    if activation == "relu":
        return torch.relu(raw)
    if activation == "leaky_relu":
        return nn.functional.leaky_relu(raw)
    raise KiloNerfError(f"density activation must be one of {DENSITY_ACTIVATIONS}, got '{activation}'")


class MultiNetField(nn.Module):
    """A :class:`~kilonerf.fields.base.RadianceField` made of ``prod(res)`` tiny MLPs.

    Args:
        bbox: (2, 3) scene box (min, max); it is kept exactly (cells slightly non-cubic).
        max_res: cells on the longest axis; ``res`` overrides the whole resolution.
        hidden: hidden width (32 in the paper); ``pos_freqs``/``dir_freqs``: encoding L.
        shared_init: the paper's initialisation, every network starting from the same weights
            drawn once with ``seed``; False draws independent weights per network.
        backend: default grouped-evaluation backend name for :meth:`forward`/:meth:`density`.
    """

    def __init__(
        self,
        bbox: Tensor,
        max_res: int = 16,
        res: tuple[int, int, int] | None = None,
        hidden: int = 32,
        pos_freqs: int = 10,
        dir_freqs: int = 4,
        shared_init: bool = True,
        seed: int = 0,
        backend: str = "torch_ref",
    ) -> None:
        super().__init__()
        bbox = torch.as_tensor(bbox, dtype=torch.float32).reshape(2, 3)
        self.register_buffer("bbox", bbox.clone())
        grid_res = grid_resolution(bbox, max_res) if res is None else (int(res[0]), int(res[1]), int(res[2]))
        self.res: tuple[int, int, int] = grid_res
        self.hidden, self.pos_freqs, self.dir_freqs = hidden, pos_freqs, dir_freqs
        self.backend = backend
        shapes = layer_shapes(hidden, pos_freqs, dir_freqs)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        gen = torch.Generator().manual_seed(seed)
        k = self.num_networks
        for fan_in, fan_out in shapes:
            # nn.Linear's default, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            # for weights and biases alike.
            bound = 1.0 / math.sqrt(fan_in)
            draws = 1 if shared_init else k
            w = (torch.rand((draws, fan_in, fan_out), generator=gen) * 2 - 1) * bound
            b = (torch.rand((draws, fan_out), generator=gen) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w.expand(k, -1, -1).clone()))
            self.biases.append(nn.Parameter(b.expand(k, -1).clone()))

    @property
    def grid(self) -> NetworkGrid:
        return NetworkGrid(bbox=self.bbox.detach(), res=self.res)

    @property
    def num_networks(self) -> int:
        return self.res[0] * self.res[1] * self.res[2]

    @property
    def params_per_network(self) -> int:
        return sum(int(t[0].numel()) for t in [*self.weights, *self.biases])

    def params(self) -> MultiNetParams:
        """The batched parameters as the backends take them (views, gradients flow)."""
        return MultiNetParams(
            weights=tuple(self.weights), biases=tuple(self.biases), pos_freqs=self.pos_freqs, dir_freqs=self.dir_freqs
        )

    def view_dependent_parameters(self) -> list[nn.Parameter]:
        """Direction layer and RGB layer, weights and biases (fine-tuning's L2 regulariser)."""
        return [self.weights[3], self.biases[3], self.weights[4], self.biases[4]]

    def evaluate_local(
        self, net_index: Tensor, local: Tensor, dirs: Tensor, backend: str | GroupedBackend | None = None,
        activation: str = "relu", params: MultiNetParams | None = None,
    ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """Evaluate given networks at cell-local points (distillation samples per cell).

        Args:
            net_index: (N,) int64 in [0, num_networks) (or rows of ``params``); local: (N, 3)
                in [-1, 1]; dirs: (N, 3).
            activation: the density activation (:func:`activate_density`).
            params: parameters to evaluate instead of this field's own (e.g. a training copy
                of some networks, :meth:`MultiNetParams.select`).
        Returns:
            sigma (N,) after the density activation, rgb (N, 3).
        """
        be = get_backend(backend or self.backend)
        params = self.params() if params is None else params
        raw, rgb = be.evaluate(params, net_index, local.to(self.bbox.dtype), dirs.to(self.bbox.dtype))
        return activate_density(raw, activation), rgb

    def density(self, points: Tensor) -> Tensor:
        """World points (N, 3) -> sigma (N,) with the render-time ReLU; 0 outside the box."""
        net, local = self.grid.locate(points.to(self.bbox.dtype))
        inside = net >= 0
        be = get_backend(self.backend)
        if bool(inside.all()):
            return activate_density(be.density(self.params(), net, local))
        idx = inside.nonzero()[:, 0]
        sigma = activate_density(be.density(self.params(), net[idx], local[idx]))
        return local.new_zeros(points.shape[0]).index_put((idx,), sigma)

    def forward(self, points: Tensor, dirs: Tensor, activation: str = "relu") -> tuple[Tensor, Tensor]:
        """World points (N, 3), unit dirs (N, 3) -> sigma (N,), rgb (N, 3); 0 outside the box."""
        net, local = self.grid.locate(points.to(self.bbox.dtype))
        dirs = dirs.to(self.bbox.dtype)
        inside = net >= 0
        if bool(inside.all()):
            return self.evaluate_local(net, local, dirs, activation=activation)
        idx = inside.nonzero()[:, 0]
        sigma, rgb = self.evaluate_local(net[idx], local[idx], dirs[idx], activation=activation)
        n = points.shape[0]
        return (
            local.new_zeros(n).index_put((idx,), sigma),
            local.new_zeros(n, 3).index_put((idx,), rgb),
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments (plain types) to rebuild an identical module for a state dict."""
        return {
            "bbox": self.bbox.tolist(),
            "res": list(self.res),
            "hidden": self.hidden,
            "pos_freqs": self.pos_freqs,
            "dir_freqs": self.dir_freqs,
            "backend": self.backend,
        }

