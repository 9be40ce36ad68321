"""The compiled backend's bf16 engines (AMX, AVX512-BF16) against references on small random inputs.

Two references: a torch emulation of exactly what the kernel rounds (inputs, encodings,
activations and weights to bf16, products summed in float64), which it must match closely,
and the fp32 per-network loop, which it must match to bf16's precision. Each engine is skipped
where the CPU (or OS) does not offer it.
"""

from __future__ import annotations

import math

import pytest
import torch

from kilonerf.errors import KiloNerfError
from kilonerf.kernels.base import MultiNetParams, layer_shapes
from kilonerf.kernels.encoding import positional_encoding

EMULATED_TOL = 2e-3
"""Max abs difference from the bf16 emulation, relative to max(1, output scale): only the fp32
summation order differs, which can flip an activation's bf16 rounding by one unit (2^-8)."""
FP32_TOL = 3e-2
"""Max abs difference from fp32, relative to max(1, output scale): bf16 keeps 8 bits of mantissa."""


def _params(num_nets: int, seed: int = 0) -> MultiNetParams:
    gen = torch.Generator().manual_seed(seed)
    ws = tuple(torch.randn((num_nets, i, o), generator=gen) / math.sqrt(i) for i, o in layer_shapes())
    bs = tuple(torch.randn((num_nets, o), generator=gen) * 0.3 for _, o in layer_shapes())
    return MultiNetParams(ws, bs)


def _bf16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16).to(torch.float64)


def _reference(p: MultiNetParams, net: torch.Tensor, pos: torch.Tensor, d: torch.Tensor, rounded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """One network at a time; ``rounded``: bf16 operands as the kernel has them, else fp32."""
    r = _bf16 if rounded else (lambda x: x.double())
    w = [r(t) for t in p.weights]
    b = [t.double() for t in p.biases]
    sig = torch.zeros(net.shape[0], dtype=torch.float64)
    rgb = torch.zeros(net.shape[0], 3, dtype=torch.float64)
    for k in net.unique().tolist():
        m = (net == k).nonzero()[:, 0]
        h = torch.relu(r(positional_encoding(pos[m], 10)) @ w[0][k] + b[0][k])
        h = torch.relu(r(h) @ w[1][k] + b[1][k])
        o = r(h) @ w[2][k] + b[2][k]
        x = torch.cat([r(o[:, 1:]), r(positional_encoding(d[m], 4))], -1)
        h = torch.relu(x @ w[3][k] + b[3][k])
        sig[m] = o[:, 0]
        rgb[m] = torch.sigmoid(r(h) @ w[4][k] + b[4][k])
    return sig.float(), rgb.float()


@pytest.fixture(params=["bf16-amx", "bf16-avx512"])
def bf16_backend(request):  # type: ignore[no-untyped-def]
    from kilonerf.kernels.cpu import CpuFusedBackend
    from kilonerf.kernels.native import NoCompiler

    try:
        be = CpuFusedBackend(precision="auto")
    except NoCompiler as exc:
        pytest.skip(f"native kernels unavailable: {exc}")
    if request.param not in be.bf16_engines:
        pytest.skip(f"no {request.param} on this CPU (or the OS does not grant the AMX tile state)")
    return CpuFusedBackend(precision=request.param)


@pytest.mark.parametrize("num_nets,n,seed", [(1, 1, 0), (3, 17, 1), (40, 700, 2), (5, 16 * 37 + 5, 3)])
def test_bf16_matches_emulation_and_fp32(bf16_backend, num_nets: int, n: int, seed: int) -> None:  # type: ignore[no-untyped-def]
    assert bf16_backend.precision.startswith("bf16-")
    gen = torch.Generator().manual_seed(seed + 10)
    p = _params(num_nets, seed)
    net = torch.randint(0, num_nets, (n,), generator=gen)
    pos = torch.rand((n, 3), generator=gen) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn((n, 3), generator=gen), dim=-1)
    with torch.no_grad():
        sig, rgb = bf16_backend.evaluate(p, net, pos, d)
        dens = bf16_backend.density(p, net, pos)
    assert torch.equal(dens, sig)  # the density-only path computes the same first three layers
    for rounded, tol in [(True, EMULATED_TOL), (False, FP32_TOL)]:
        ref_sig, ref_rgb = _reference(p, net, pos, d, rounded)
        for name, a, ref in [("sigma", sig, ref_sig), ("rgb", rgb, ref_rgb)]:
            err = float((a - ref).abs().max())
            assert err <= tol * max(1.0, float(ref.abs().max())), f"{name} vs {'bf16' if rounded else 'fp32'}: {err:.3g}"
    # bf16 is not fp32: a path that silently ran fp32 would pass the tolerances above.
    assert float((sig - _reference(p, net, pos, d, False)[0]).abs().max()) > 1e-6


def test_bf16_weights_repacked_after_an_update(bf16_backend) -> None:  # type: ignore[no-untyped-def]
    p = _params(2)
    net, pos = torch.tensor([0, 1, 1]), torch.rand(3, 3) * 2 - 1
    with torch.no_grad():
        before = bf16_backend.density(p, net, pos)
        p.weights[2].zero_()  # in place: same storage, new version, so the tiles must be rebuilt
        after = bf16_backend.density(p, net, pos)
    assert not torch.allclose(before, after)
    assert torch.equal(after, p.biases[2][net, 0])


def test_precision_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from kilonerf.kernels.cpu import PRECISION_ENV, CpuFusedBackend
    from kilonerf.kernels.native import NoCompiler

    try:
        assert CpuFusedBackend(precision="fp32").precision == "fp32"
        monkeypatch.setenv(PRECISION_ENV, "fp32")
        assert CpuFusedBackend().precision == "fp32"
        monkeypatch.setenv(PRECISION_ENV, "fp16")
        with pytest.raises(KiloNerfError, match=PRECISION_ENV):
            CpuFusedBackend()
        monkeypatch.delenv(PRECISION_ENV)
        be = CpuFusedBackend()
        assert be.precision == ("bf16-amx" if "bf16-amx" in be.bf16_engines else "fp32")
    except NoCompiler as exc:
        pytest.skip(f"native kernels unavailable: {exc}")
