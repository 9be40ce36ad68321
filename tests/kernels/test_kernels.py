"""The grouped-evaluation interface and the pure-torch reference backend vs a per-network loop."""

from __future__ import annotations

import math

import pytest
import torch

from kilonerf.errors import KiloNerfError
from kilonerf.kernels.encoding import positional_encoding
from kilonerf.kernels import GroupedBackend, MultiNetParams, available_backends, get_backend
from kilonerf.kernels.base import layer_shapes
from kilonerf.kernels.torch_ref import TorchRefBackend


def _params(num_nets: int, seed: int = 0) -> MultiNetParams:
    gen = torch.Generator().manual_seed(seed)
    ws, bs = [], []
    for fan_in, fan_out in layer_shapes():
        ws.append((torch.randn((num_nets, fan_in, fan_out), generator=gen) / math.sqrt(fan_in)).requires_grad_())
        bs.append((torch.randn((num_nets, fan_out), generator=gen) * 0.3).requires_grad_())
    return MultiNetParams(tuple(ws), tuple(bs))


def _loop_reference(p: MultiNetParams, net: torch.Tensor, pos: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The obvious version: one network at a time, plain matmuls."""
    w, b = p.weights, p.biases
    rows, sigs, rgbs = [], [], []
    for k in net.unique().tolist():
        m = (net == k).nonzero()[:, 0]
        h = torch.relu(positional_encoding(pos[m], 10) @ w[0][k] + b[0][k])
        h = torch.relu(h @ w[1][k] + b[1][k])
        o = h @ w[2][k] + b[2][k]
        h = torch.relu(torch.cat([o[:, 1:], positional_encoding(d[m], 4)], -1) @ w[3][k] + b[3][k])
        rows.append(m)
        sigs.append(o[:, 0])
        rgbs.append(torch.sigmoid(h @ w[4][k] + b[4][k]))
    order = torch.cat(rows)
    sig = pos.new_zeros(net.shape[0]).index_copy(0, order, torch.cat(sigs))
    rgb = pos.new_zeros(net.shape[0], 3).index_copy(0, order, torch.cat(rgbs))
    return sig, rgb


def _check_against_loop(backend: GroupedBackend, num_nets: int, net: torch.Tensor, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed + 1)
    n = net.shape[0]
    p = _params(num_nets, seed)
    pos = (torch.rand((n, 3), generator=gen) * 2 - 1).requires_grad_()
    d = torch.nn.functional.normalize(torch.randn((n, 3), generator=gen), dim=-1).requires_grad_()
    g_sig, g_rgb = torch.randn((n,), generator=gen), torch.randn((n, 3), generator=gen)
    leaves = [*p.weights, *p.biases, pos, d]

    def run(fn: object) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        sig, rgb = fn(p, net, pos, d)  # type: ignore[operator]
        loss = (sig * g_sig).sum() + (rgb * g_rgb).sum()
        grads = torch.autograd.grad(loss, leaves, allow_unused=True)
        return [sig, rgb], [torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves)]

    out, grads = run(backend.evaluate)
    ref_out, ref_grads = run(_loop_reference)
    assert out[0].shape == (n,) and out[1].shape == (n, 3)
    names = ["sigma", "rgb"] + [f"grad w{i}" for i in range(5)] + [f"grad b{i}" for i in range(5)] + ["grad pos", "grad dir"]
    for name, a, b in zip(names, [t.detach() for t in out + grads], [t.detach() for t in ref_out + ref_grads]):
        # 1e-5 absolute, relative to the magnitude where it exceeds 1: position gradients reach
        # ~250 (frequencies up to 2^9), where fp32 rounding alone is ~5e-5 (the loop itself
        # differs that much from a float64 evaluation).
        err = float((a - b).abs().max()) if a.numel() else 0.0
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        assert err <= 1e-5 * scale, f"{name}: max abs diff {err:.3g} (scale {scale:.3g})"
    dens = backend.density(p, net, pos)
    assert torch.allclose(dens, ref_out[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("max_rows", [1024, 4])
def test_skewed_counts_with_empty_networks(max_rows: int) -> None:
    # 40 networks, half of them without samples, counts from 1 to ~60 (max_rows=4 splits runs
    # into many pieces, exercising the exactly-full and padded groups).
    gen = torch.Generator().manual_seed(3)
    used = torch.randperm(40, generator=gen)[:20]
    weights = torch.rand(20, generator=gen) ** 3
    net = used[torch.multinomial(weights, 400, replacement=True, generator=gen)]
    _check_against_loop(TorchRefBackend(max_rows), 40, net)


def test_single_sample() -> None:
    _check_against_loop(TorchRefBackend(), 8, torch.tensor([5]))


def test_all_samples_in_one_network() -> None:
    _check_against_loop(TorchRefBackend(max_rows=64), 4, torch.full((300,), 2, dtype=torch.long))


def test_many_networks() -> None:
    gen = torch.Generator().manual_seed(4)
    _check_against_loop(TorchRefBackend(), 300, torch.randint(0, 300, (500,), generator=gen))


def _check_dir_index(backend: GroupedBackend, grads: bool) -> None:
    """``dirs`` (D, 3) with ``dir_index`` must equal the loop on ``dirs[dir_index]``, values and
    (for differentiable backends) the gradients reaching the shared directions."""
    gen = torch.Generator().manual_seed(11)
    p = _params(30)
    net = torch.randint(0, 30, (600,), generator=gen)
    pos = torch.rand((600, 3), generator=gen) * 2 - 1
    rays = torch.nn.functional.normalize(torch.randn((40, 3), generator=gen), dim=-1).requires_grad_(grads)
    idx = torch.randint(0, 40, (600,), generator=gen)
    g_rgb = torch.randn((600, 3), generator=gen)
    with torch.set_grad_enabled(grads):
        sig, rgb = backend.evaluate(p, net, pos, rays, idx)
        ref_sig, ref_rgb = _loop_reference(p, net, pos, rays.index_select(0, idx))
    assert float((sig - ref_sig).detach().abs().max()) <= 1e-5 and float((rgb - ref_rgb).detach().abs().max()) <= 1e-5
    if grads:
        (mine,) = torch.autograd.grad((rgb * g_rgb).sum(), rays)
        (ref,) = torch.autograd.grad((ref_rgb * g_rgb).sum(), rays)
        assert float((mine - ref).abs().max()) <= 1e-5 * max(1.0, float(ref.abs().max()))


def test_shared_directions_by_index() -> None:
    _check_dir_index(TorchRefBackend(max_rows=16), grads=True)


def test_no_samples() -> None:
    p = _params(3)
    sig, rgb = TorchRefBackend().evaluate(p, torch.zeros(0, dtype=torch.long), torch.zeros(0, 3), torch.zeros(0, 3))
    assert sig.shape == (0,) and rgb.shape == (0, 3)


def test_registry_and_param_checks() -> None:
    assert "torch_ref" in available_backends()
    be = get_backend("torch_ref")
    assert isinstance(be, TorchRefBackend) and be.differentiable and get_backend("torch_ref") is be
    mine = TorchRefBackend(8)
    assert get_backend(mine) is mine
    with pytest.raises(KiloNerfError, match="unknown kernel backend"):
        get_backend("no_such_backend")
    p = _params(2)
    p.check()
    bad = MultiNetParams(p.weights[:4] + (p.weights[4][:, :, :2],), p.biases)
    with pytest.raises(ValueError, match="layer 4"):
        bad.check()


# --- the compiled CPU backend's forward against the same per-network loop --------------------


# cpu_backend: the fixture in conftest.py.


def _check_forward(backend: GroupedBackend, num_nets: int, net: torch.Tensor, seed: int = 0, spread: float = 1.0) -> None:
    gen = torch.Generator().manual_seed(seed + 1)
    n = net.shape[0]
    p = _params(num_nets, seed)
    pos = (torch.rand((n, 3), generator=gen) * 2 - 1) * spread
    d = torch.nn.functional.normalize(torch.randn((n, 3), generator=gen), dim=-1)
    with torch.no_grad():
        sig, rgb = backend.evaluate(p, net, pos, d)
        ref_sig, ref_rgb = _loop_reference(p, net, pos, d) if n else (torch.zeros(0), torch.zeros(0, 3))
        dens = backend.density(p, net, pos)
    assert sig.shape == (n,) and rgb.shape == (n, 3) and dens.shape == (n,)
    for name, a, b in [("sigma", sig, ref_sig), ("rgb", rgb, ref_rgb), ("density", dens, ref_sig)]:
        err = float((a - b).abs().max()) if n else 0.0
        assert err <= 1e-5 * max(1.0, float(b.abs().max()) if n else 1.0), f"{name}: max abs diff {err:.3g}"


def test_cpu_backend_awkward_sizes(cpu_backend: GroupedBackend) -> None:
    gen = torch.Generator().manual_seed(5)
    used = torch.randperm(40, generator=gen)[:20]  # half the networks get no sample
    weights = torch.rand(20, generator=gen) ** 3
    _check_forward(cpu_backend, 40, used[torch.multinomial(weights, 400, replacement=True, generator=gen)])
    _check_forward(cpu_backend, 8, torch.tensor([5]))  # one sample: 15 idle lanes
    _check_forward(cpu_backend, 8, torch.tensor([7, 0, 7]))  # highest index, two networks
    # One network, several 256-sample work items and a partial block of 16.
    _check_forward(cpu_backend, 4, torch.full((16 * 37 + 5,), 2, dtype=torch.long))
    _check_forward(cpu_backend, 700, torch.randint(0, 700, (1001,), generator=gen))  # many networks
    _check_forward(cpu_backend, 3, torch.zeros(0, dtype=torch.long))  # no samples


def test_cpu_backend_shared_directions_by_index(cpu_backend: GroupedBackend) -> None:
    _check_dir_index(cpu_backend, grads=False)


def test_cpu_backend_large_arguments(cpu_backend: GroupedBackend) -> None:
    # Positions beyond [-1, 1] exercise the 2 pi range reduction of the encoding (sin(2^9 x)).
    gen = torch.Generator().manual_seed(6)
    _check_forward(cpu_backend, 5, torch.randint(0, 5, (200,), generator=gen), spread=7.0)


def test_cpu_backend_records_autograd_and_checks_indices(cpu_backend: GroupedBackend) -> None:
    p = _params(6)
    net = torch.tensor([0, 5, 5, 1])
    pos, d = torch.rand(4, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    sig, rgb = cpu_backend.evaluate(p, net, pos, d)  # params require grad: the training path (test_cpu_train.py)
    assert sig.requires_grad and rgb.requires_grad
    ref_sig, _ = _loop_reference(p, net, pos, d)
    assert torch.allclose(sig, ref_sig, atol=1e-5)
    with torch.no_grad(), pytest.raises(ValueError, match="network index"):
        cpu_backend.evaluate(p, torch.tensor([0, 6]), pos[:2], d[:2])


def test_cpu_backend_without_compiler_falls_back(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from kilonerf.kernels import _cpu
    from kilonerf.kernels import native

    monkeypatch.setenv("CC", "/nonexistent/cc")
    monkeypatch.setenv("KILONERF_CACHE", str(tmp_path))
    native.load_library.cache_clear()
    try:
        with pytest.warns(UserWarning, match="using the pure-torch reference"):
            be = _cpu()
        assert isinstance(be, TorchRefBackend)
    finally:
        native.load_library.cache_clear()
