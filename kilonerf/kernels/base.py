"""The interface every grouped tiny-MLP evaluation backend implements.

A backend evaluates many samples, each belonging to one of ``num_nets`` tiny MLPs that share
an architecture but not their weights. Samples arrive in any order; the backend groups them by
network however suits its hardware (padded batched matmuls, a fused CPU loop, a GPU kernel
with one program per network) and returns results in the input order.

The architecture (KiloNeRF's tiny MLP, ``H`` = hidden width, 32 in the paper)::

    PE(local_pos, Lp) -> FC H -> ReLU -> FC H -> ReLU -> FC 1+H   (raw density, features)
    concat(features, PE(dir, Ld)) -> FC H -> ReLU -> FC 3 -> sigmoid (rgb)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from kilonerf.kernels.encoding import encoded_dim
from kilonerf.kernels.fused import FusedRenderer

NUM_LAYERS = 5
"""Layer order in :class:`MultiNetParams`: pos1, pos2, density+features, view, rgb."""


def layer_shapes(hidden: int = 32, pos_freqs: int = 10, dir_freqs: int = 4) -> list[tuple[int, int]]:
    """(fan_in, fan_out) of the five layers; 63-32, 32-32, 32-33, 59-32, 32-3 in the paper."""
    pe_pos, pe_dir = encoded_dim(3, pos_freqs), encoded_dim(3, dir_freqs)
    return [(pe_pos, hidden), (hidden, hidden), (hidden, 1 + hidden), (hidden + pe_dir, hidden), (hidden, 3)]


@dataclass(frozen=True)
class MultiNetParams:
    """The batched parameters of a grid of tiny MLPs.

    ``weights[i]`` is (num_nets, in_i, out_i) (so ``x @ W``), ``biases[i]`` is (num_nets, out_i),
    in the layer order of :data:`NUM_LAYERS`. Tensors may require grad; backends that are
    differentiable propagate into them.
    """

    weights: tuple[Tensor, ...]
    biases: tuple[Tensor, ...]
    pos_freqs: int = 10
    dir_freqs: int = 4

    @property
    def num_nets(self) -> int:
        return int(self.weights[0].shape[0])

    @property
    def hidden(self) -> int:
        return int(self.weights[0].shape[2])

    def select(self, nets: Tensor) -> "MultiNetParams":
        """The parameters of networks ``nets`` (U,) int64 only, as networks 0 .. U-1 (differentiable)."""
        return MultiNetParams(tuple(w.index_select(0, nets) for w in self.weights),
                              tuple(b.index_select(0, nets) for b in self.biases), self.pos_freqs, self.dir_freqs)  # fmt: skip

    def detach_requires_grad(self) -> "MultiNetParams":
        """Detached copies that are leaves requiring grad (their ``.grad`` collects gradients)."""
        return MultiNetParams(tuple(w.detach().requires_grad_() for w in self.weights),
                              tuple(b.detach().requires_grad_() for b in self.biases), self.pos_freqs, self.dir_freqs)  # fmt: skip

    def check(self) -> None:
        """Raise ValueError if the shapes do not form the tiny-MLP architecture."""
        if len(self.weights) != NUM_LAYERS or len(self.biases) != NUM_LAYERS:
            raise ValueError(f"MultiNetParams: expected {NUM_LAYERS} layers, got {len(self.weights)}")
        k = self.num_nets
        shapes = layer_shapes(self.hidden, self.pos_freqs, self.dir_freqs)
        for i, ((fan_in, fan_out), w, b) in enumerate(zip(shapes, self.weights, self.biases)):
            if tuple(w.shape) != (k, fan_in, fan_out) or tuple(b.shape) != (k, fan_out):
                raise ValueError(
                    f"MultiNetParams: layer {i} has weight {tuple(w.shape)} / bias {tuple(b.shape)}, "
                    f"expected {(k, fan_in, fan_out)} / {(k, fan_out)}"
                )


class GroupedBackend(ABC):
    """Evaluates samples grouped by network. Subclasses register by name in :mod:`kilonerf.kernels`."""

    name: str = "abstract"
    differentiable: bool = False
    """Whether gradients flow to the parameters and inputs (needed for training)."""
    precision: str = "fp32"
    """The arithmetic of its products (``fp32``; the compiled backend may run ``bf16-amx`` or
    ``bf16-avx512``, the Triton ones ``ieee``, ``tf32`` or ``fp16``): reported with timings."""

    @abstractmethod
    def evaluate(
        self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor,
        dir_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Evaluate every sample with its own network.

        Args:
            params: the batched network parameters.
            net_index: (N,) int64 in [0, num_nets); any order, any multiplicity.
            local_pos: (N, 3) cell-local positions in [-1, 1].
            dirs: (N, 3) unit view directions; with ``dir_index``, (D, 3) of which sample ``i``
                takes row ``dir_index[i]`` (a renderer's one direction per ray, so that a
                backend can encode each direction once rather than once per sample).
            dir_index: (N,) int64 in [0, D), or None.
        Returns:
            raw_density (N,) before the density activation, rgb (N, 3) in [0, 1].
        """

    def density(self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor) -> Tensor:
        """(N,) raw density only; backends may override to skip the view-dependent layers."""
        raw, _ = self.evaluate(params, net_index, local_pos, torch.zeros_like(local_pos))
        return raw

    def fused_renderer(self, params: MultiNetParams, device: torch.device) -> FusedRenderer | None:
        """The optional capability to march, evaluate and composite in one call for these
        parameters on ``device`` (:mod:`kilonerf.kernels.fused`); None where the backend has
        none or it does not apply (renderers then evaluate through :meth:`evaluate`)."""
        return None


class DensityFirstBackend(GroupedBackend):
    """A backend written as one ``_run`` that stops after the density when ``dirs`` is None."""

    def evaluate(
        self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor,
        dir_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        sigma, rgb = self._run(params, net_index, local_pos, dirs, dir_index)
        assert rgb is not None
        return sigma, rgb

    def density(self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor) -> Tensor:
        return self._run(params, net_index, local_pos, None)[0]

    @abstractmethod
    def _run(
        self, params: MultiNetParams, net_index: Tensor, local_pos: Tensor, dirs: Tensor | None,
        dir_index: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """raw density (N,) and rgb (N, 3), or None for rgb when ``dirs`` is None; ``dirs`` and
        ``dir_index`` as in :meth:`GroupedBackend.evaluate`."""
