"""Training through the compiled CPU backend (``kernels/cpu_train.py``, ``csrc/kn_mlp_grad.c``):
its parameter gradients against the per-network loop, in-place accumulation, and the fallbacks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kilonerf.kernels import GroupedBackend, MultiNetParams
from tests.kernels.test_kernels import _loop_reference, _params


def _inputs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pos = torch.rand((n, 3), generator=gen) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn((n, 3), generator=gen), dim=-1)
    return pos, d, torch.randn((n,), generator=gen), torch.randn((n, 3), generator=gen)


def _grads(fn: object, p: MultiNetParams, net: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """sigma, rgb and the ten parameter gradients of sum(sigma g_sig) + sum(rgb g_rgb)."""
    pos, d, g_sig, g_rgb = _inputs(net.shape[0], seed)
    sig, rgb = fn(p, net, pos, d)  # type: ignore[operator]
    loss = (sig * g_sig).sum() + (rgb * g_rgb).sum()
    grads = torch.autograd.grad(loss, [*p.weights, *p.biases])
    return [sig.detach(), rgb.detach(), *grads]


def _check_grads(backend: GroupedBackend, num_nets: int, net: torch.Tensor, seed: int = 0) -> None:
    p = _params(num_nets, seed)
    got, ref = _grads(backend.evaluate, p, net, seed), _grads(_loop_reference, p, net, seed)
    names = ["sigma", "rgb"] + [f"grad w{i}" for i in range(5)] + [f"grad b{i}" for i in range(5)]
    for name, a, b in zip(names, got, ref):
        err = float((a - b).abs().max())
        # fp32 sums over up to ~600 samples in another order: 1e-5 of the largest value.
        assert err <= 1e-5 * max(1.0, float(b.abs().max())), f"{name}: max abs diff {err:.3g}"


def test_gradients_match_the_per_network_loop(cpu_backend: GroupedBackend) -> None:
    gen = torch.Generator().manual_seed(4)
    used = torch.randperm(30, generator=gen)[:15]  # half the networks get no sample: zero gradient
    skew = torch.rand(15, generator=gen) ** 3
    _check_grads(cpu_backend, 30, used[torch.multinomial(skew, 500, replacement=True, generator=gen)])
    _check_grads(cpu_backend, 4, torch.tensor([3]))  # one sample: 15 idle lanes carry no gradient
    _check_grads(cpu_backend, 3, torch.full((16 * 20 + 7,), 1, dtype=torch.long))  # one busy network


@settings(max_examples=15, deadline=None)
@given(num_nets=st.integers(1, 9), n=st.integers(1, 90), seed=st.integers(0, 2**16))
def test_gradients_on_random_layouts(cpu_backend: GroupedBackend, num_nets: int, n: int, seed: int) -> None:
    net = torch.randint(0, num_nets, (n,), generator=torch.Generator().manual_seed(seed))
    _check_grads(cpu_backend, num_nets, net, seed)


def test_gradients_add_into_persistent_buffers(cpu_backend: GroupedBackend) -> None:
    """With ``.grad`` buffers already there (``LazyRowAdam``'s), the backward adds into them in
    place, as the reference's in-place gathers do."""
    net = torch.tensor([0, 2, 2, 1, 0, 2])
    p = _params(3)
    ref = _grads(_loop_reference, p, net, 1)[2:]
    leaves = [*p.weights, *p.biases]
    buffers = [torch.full_like(t, 0.5) for t in leaves]
    for t, g in zip(leaves, buffers):
        t.grad = g
    pos, d, g_sig, g_rgb = _inputs(6, 1)
    sig, rgb = cpu_backend.evaluate(p, net, pos, d)
    ((sig * g_sig).sum() + (rgb * g_rgb).sum()).backward()
    for t, g, r in zip(leaves, buffers, ref):
        assert t.grad is g  # the same buffer, not a new tensor
        assert torch.allclose(g, r + 0.5, atol=1e-5)
    # Added in place, not handed to autograd (which backward() would add the same way).
    sig, rgb = cpu_backend.evaluate(p, net, pos, d)
    seen = torch.autograd.grad((sig * g_sig).sum() + (rgb * g_rgb).sum(), leaves, allow_unused=True)
    assert all(g is None for g in seen)
    assert torch.allclose(buffers[0], 2 * ref[0] + 0.5, atol=1e-5)


def test_input_gradients_and_density_only_use_the_reference(cpu_backend: GroupedBackend) -> None:
    net = torch.tensor([0, 1, 1])
    p = _params(2)
    pos, d, _, _ = _inputs(3, 2)
    pos.requires_grad_()
    sig, _ = cpu_backend.evaluate(p, net, pos, d)
    (g_pos,) = torch.autograd.grad(sig.sum(), [pos])
    ref_sig, _ = _loop_reference(p, net, pos, d)
    (ref_pos,) = torch.autograd.grad(ref_sig.sum(), [pos])
    assert torch.allclose(g_pos, ref_pos, atol=1e-4, rtol=1e-4)
    dens = cpu_backend.density(p, net, pos.detach())
    assert dens.requires_grad and torch.allclose(dens, ref_sig.detach(), atol=1e-5)


def test_bad_network_index_is_an_error(cpu_backend: GroupedBackend) -> None:
    p = _params(2)
    pos, d, _, _ = _inputs(2, 3)
    with pytest.raises(ValueError, match="network index"):
        cpu_backend.evaluate(p, torch.tensor([0, 2]), pos, d)
