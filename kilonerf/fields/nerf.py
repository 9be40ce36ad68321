"""The paper's teacher: one large NeRF MLP (8 x 256, skip at layer 4, 128-wide view branch)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from kilonerf.kernels.encoding import encoded_dim, positional_encoding


class NeRFField(nn.Module):
    """NeRF's MLP as KiloNeRF's teacher, without the coarse/fine hierarchy.

    Layout (``width`` = 256, ``depth`` = 8 in the paper)::

        PE(x) (63) -> 8 x [FC width, ReLU], PE(x) concatenated again after the 5th layer
                   -> FC 1: raw sigma            (ReLU applied in density/forward)
                   -> FC width: feature (linear)
        concat(feature, PE(d) (27)) -> FC dir_width -> ReLU -> FC 3 -> sigmoid: rgb

    Positions are world coordinates, as the original NeRF used them for the Synthetic scenes.
    Weights are Glorot-uniform with zero biases (the original's TensorFlow defaults), except the
    density bias, set to ``density_bias``: PyTorch's default init (bias-dominated deep outputs)
    often starts every raw sigma below zero, where the ReLU passes no gradient and training
    never starts. A small positive value (e.g. 1 / scene-box diagonal) makes a light fog that
    training then clears.
    Implements :class:`kilonerf.fields.base.RadianceField`.
    """

    def __init__(
        self,
        num_freqs_pos: int = 10,
        num_freqs_dir: int = 4,
        width: int = 256,
        depth: int = 8,
        skip: int = 4,
        dir_width: int = 128,
        density_bias: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0 <= skip < depth - 1:
            raise ValueError(f"NeRFField: skip layer {skip} must lie inside the {depth}-layer trunk")
        self.num_freqs_pos = num_freqs_pos
        self.num_freqs_dir = num_freqs_dir
        self.skip = skip
        pos_dim = encoded_dim(3, num_freqs_pos)
        dir_dim = encoded_dim(3, num_freqs_dir)
        in_dims = [pos_dim] + [width + pos_dim if i == skip + 1 else width for i in range(1, depth)]
        self.trunk = nn.ModuleList(nn.Linear(d, width) for d in in_dims)
        self.sigma_head = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.dir_layer = nn.Linear(width + dir_dim, dir_width)
        self.rgb_head = nn.Linear(dir_width, 3)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.sigma_head.bias, density_bias)

    def _trunk(self, points: Tensor) -> Tensor:
        """points (N, 3) -> trunk activations (N, width)."""
        x = positional_encoding(points, self.num_freqs_pos)
        h = x
        for i, layer in enumerate(self.trunk):
            h = torch.relu(layer(h))
            if i == self.skip:
                # The input is fed again so that deep layers still see the high frequencies.
                h = torch.cat([h, x], dim=-1)
        return h

    def raw_density(self, points: Tensor) -> Tensor:
        """points (N, 3) -> raw sigma (N,) before the ReLU (may be negative)."""
        return self.sigma_head(self._trunk(points)).squeeze(-1)

    def density(self, points: Tensor) -> Tensor:
        """points (N, 3) -> sigma (N,) >= 0 per unit world length."""
        return torch.relu(self.raw_density(points))

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        """points (N, 3), unit dirs (N, 3) -> sigma (N,) >= 0, rgb (N, 3) in [0, 1]."""
        h = self._trunk(points)
        sigma = torch.relu(self.sigma_head(h).squeeze(-1))
        d = positional_encoding(dirs, self.num_freqs_dir)
        v = torch.relu(self.dir_layer(torch.cat([self.feature(h), d], dim=-1)))
        rgb = torch.sigmoid(self.rgb_head(v))
        return sigma, rgb
