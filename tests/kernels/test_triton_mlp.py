"""The ``triton`` backend's fused tiny-MLP kernel against the pure-torch reference.

Without a GPU the kernel runs in the Triton interpreter on CPU tensors (``TRITON_INTERPRET=1``,
set by tests/conftest.py before anything imports Triton); with one, the same tests run the
compiled kernel on CUDA tensors (``benchmarks/gpu_check.py`` runs them there). The interpreter computes fp32
products exactly; on a GPU, ``tf32`` and ``fp16`` operands round, hence their tolerances.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    # tests/conftest.py sets it first; here too for running this file alone elsewhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from kilonerf.kernels import get_backend  # noqa: E402
from kilonerf.kernels.base import MultiNetParams, layer_shapes  # noqa: E402
from kilonerf.kernels.torch_ref import TorchRefBackend  # noqa: E402
from kilonerf.kernels.triton_mlp import TritonBackend, interpreted, tile_table  # noqa: E402

DEVICE = "cpu" if interpreted() else "cuda"

# Largest |difference| allowed, per operand precision: fp32 products agree to rounding (a few
# ulp of outputs of order 1); tf32 and fp16 keep 10-bit mantissas, ~1e-3 relative per product.
TOLERANCE = {"ieee": 2e-5, "tf32": 2e-5 if DEVICE == "cpu" else 1e-2, "fp16": 3e-3}


def _params(num_nets: int, hidden: int = 32, pos_freqs: int = 10, dir_freqs: int = 4, seed: int = 0) -> MultiNetParams:
    gen = torch.Generator().manual_seed(seed)
    ws, bs = [], []
    for fan_in, fan_out in layer_shapes(hidden, pos_freqs, dir_freqs):
        ws.append((torch.randn((num_nets, fan_in, fan_out), generator=gen) / math.sqrt(fan_in)).to(DEVICE))
        bs.append((torch.randn((num_nets, fan_out), generator=gen) * 0.3).to(DEVICE))
    return MultiNetParams(tuple(ws), tuple(bs), pos_freqs, dir_freqs)


def _inputs(n: int, num_nets: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Networks drawn unevenly (some empty, one with several tiles), positions in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    weights = torch.rand(num_nets, generator=gen) ** 3
    weights[0] = 0.0
    net = torch.multinomial(weights, n, replacement=True, generator=gen)
    pos = torch.rand((n, 3), generator=gen) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn((n, 3), generator=gen), dim=-1)
    return net.to(DEVICE), pos.to(DEVICE), dirs.to(DEVICE)


@pytest.mark.parametrize("precision", ["ieee", "tf32", "fp16"])
def test_evaluate_matches_reference(precision: str) -> None:
    params = _params(6)
    net, pos, dirs = _inputs(300, 6)
    be = TritonBackend(precision, block_rows=32)
    assert be.applies(params, pos.device, (pos,))
    sigma, rgb = be.evaluate(params, net, pos, dirs)
    ref_sigma, ref_rgb = TorchRefBackend().evaluate(params, net, pos, dirs)
    tol = TOLERANCE[precision]
    assert sigma.shape == (300,) and rgb.shape == (300, 3)
    assert torch.isfinite(sigma).all() and torch.isfinite(rgb).all()
    assert (sigma - ref_sigma).abs().max().item() <= tol * max(1.0, ref_sigma.abs().max().item())
    assert (rgb - ref_rgb).abs().max().item() <= tol


def test_density_and_dir_index_match_reference() -> None:
    """The density-only variant and one direction per ray (``dir_index``), as renderers call it."""
    params = _params(5, seed=3)
    net, pos, _ = _inputs(200, 5, seed=4)
    rays = torch.nn.functional.normalize(torch.randn((17, 3), generator=torch.Generator().manual_seed(5)), dim=-1)
    ray_of = torch.randint(0, 17, (200,), generator=torch.Generator().manual_seed(6)).to(DEVICE)
    rays = rays.to(DEVICE)
    be, ref = TritonBackend("ieee"), TorchRefBackend()
    tol = TOLERANCE["ieee"]
    sigma = be.density(params, net, pos)
    assert (sigma - ref.density(params, net, pos)).abs().max().item() <= tol * 10
    s2, rgb = be.evaluate(params, net, pos, rays, ray_of)
    r_sigma, r_rgb = ref.evaluate(params, net, pos, rays.index_select(0, ray_of))
    assert (s2 - r_sigma).abs().max().item() <= tol * 10
    assert (rgb - r_rgb).abs().max().item() <= tol


def test_other_architecture_and_fallbacks() -> None:
    """Hidden 16 with other frequencies runs the kernel; autograd and widths that are not powers
    of two go to the reference (same results, gradients flow)."""
    params = _params(3, hidden=16, pos_freqs=6, dir_freqs=2, seed=7)
    net, pos, dirs = _inputs(90, 3, seed=8)
    be = TritonBackend("ieee", block_rows=16)
    assert be.applies(params, pos.device, (pos,))
    sigma, rgb = be.evaluate(params, net, pos, dirs)
    ref_sigma, ref_rgb = TorchRefBackend().evaluate(params, net, pos, dirs)
    assert (sigma - ref_sigma).abs().max().item() <= 1e-4
    assert (rgb - ref_rgb).abs().max().item() <= 1e-4
    odd = _params(2, hidden=24, seed=9)
    assert not be.applies(odd, pos.device)
    grad_params = MultiNetParams(tuple(w.clone().requires_grad_() for w in params.weights), params.biases, 6, 2)
    assert not be.applies(grad_params, pos.device)
    s, _ = be.evaluate(grad_params, net, pos, dirs)
    s.sum().backward()
    assert grad_params.weights[0].grad is not None


def test_tile_table_covers_every_sample_once() -> None:
    net = torch.tensor([3, 0, 3, 3, 1, 3, 3, 0, 3], device=DEVICE)
    order, tile_net, start, end = tile_table(net, num_nets=5, block_rows=2)
    assert start.shape[0] == 5 + 5  # ceil(9 / 2) + min(9, 5)
    seen = []
    for t in range(start.shape[0]):
        rows = order[int(start[t]) : int(end[t])]
        assert int(end[t]) - int(start[t]) <= 2
        assert bool((net[rows] == int(tile_net[t])).all())
        seen += rows.tolist()
    assert sorted(seen) == list(range(9))


def test_registered_and_empty_input() -> None:
    be = get_backend("triton")
    assert be.name == "triton" and not be.differentiable
    assert get_backend("triton_fp16").name == "triton_fp16"
    params = _params(2)
    empty = torch.zeros((0, 3), device=DEVICE)
    sigma, rgb = be.evaluate(params, torch.zeros(0, dtype=torch.int64, device=DEVICE), empty, empty)
    assert sigma.shape == (0,) and rgb.shape == (0, 3)
