"""The Triton fused renderer (march, tiny MLPs, composite) against the torch renderer.

Runs in the Triton interpreter on CPU tensors without a GPU (tests/conftest.py sets
``TRITON_INTERPRET=1``), on CUDA tensors with one. Rays, field and occupancy grids are those
of tests/render/test_fast_render.py, fewer rays and samples (the interpreter is slow).
"""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from kilonerf.fields.multinet import MultiNetField  # noqa: E402
from kilonerf.kernels.triton_mlp import TritonBackend, interpreted  # noqa: E402
from kilonerf.kernels.triton_render import MAX_OPTICAL_THICKNESS  # noqa: E402
from kilonerf.render import volume  # noqa: E402
from kilonerf.render.fast import render_fast  # noqa: E402
from tests.render.test_fast_render import BG, BOX, _sparse_occupancy, _sphere_occupancy, _wider_occupancy  # noqa: E402

DEVICE = "cpu" if interpreted() else "cuda"
S = 32
# fp32 products ("ieee") compute what the reference computes up to summation order.
TOL = 2e-5


@pytest.fixture(scope="module")
def setup() -> tuple[MultiNetField, torch.Tensor, torch.Tensor]:
    field = MultiNetField(BOX, max_res=4, shared_init=False, seed=7)
    with torch.no_grad():
        field.biases[2][:, 0] += 2.0  # enough density that rays terminate early
    gen = torch.Generator().manual_seed(0)
    n = 40
    origins = torch.nn.functional.normalize(torch.randn((n, 3), generator=gen), dim=-1) * 3.0
    target = (torch.rand((n, 3), generator=gen) * 2 - 1) * 1.3  # some rays miss the box
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    origins[:3] = torch.rand((3, 3), generator=gen) * 0.5  # a few start inside the box
    return field.to(DEVICE), origins.to(DEVICE), dirs.to(DEVICE)


@pytest.mark.parametrize("kind,ert", [("sphere", 0.01), ("sparse", 0.0), ("wider", 0.01), ("none", 0.01)])
def test_fused_equals_torch_renderer(setup: tuple[MultiNetField, torch.Tensor, torch.Tensor], kind: str, ert: float) -> None:
    field, o, d = setup
    occ = {"none": None, "sphere": _sphere_occupancy(), "sparse": _sparse_occupancy(), "wider": _wider_occupancy()}[kind]
    occ = occ.to(DEVICE) if occ is not None else None
    be = TritonBackend("ieee")
    with torch.no_grad():  # as render_fast asks: the kernels do not record gradients
        assert be.fused_renderer(field.params(), torch.device(DEVICE)) is not None
    kw = dict(ert_threshold=ert, use_occupancy=occ is not None)
    bg = BG.to(DEVICE)
    ref = render_fast(field, occ, o, d, 0.5, 5.5, S, bg, backend="torch_ref", **kw)  # type: ignore[arg-type]
    out = render_fast(field, occ, o, d, 0.5, 5.5, S, bg, backend=be, **kw)  # type: ignore[arg-type]
    assert float((out.rgb - ref.rgb).abs().max()) <= TOL
    assert float((out.acc - ref.acc).abs().max()) <= TOL
    assert float((out.depth - ref.depth).abs().max()) <= 10 * TOL
    assert out.samples_candidate == ref.samples_candidate > 0  # the same candidates, counted to the end
    if ert == 0.0:  # without termination every candidate is evaluated on both paths
        assert out.samples_evaluated == ref.samples_evaluated
    assert out.passes > 0 and out.profile == {}


def test_leaky_density_pass_size_and_uncounted(setup: tuple[MultiNetField, torch.Tensor, torch.Tensor]) -> None:
    field, o, d = setup
    occ = _sphere_occupancy().to(DEVICE)
    be = TritonBackend("ieee")
    for per_pass in (2, 8):
        kw = dict(samples_per_pass=per_pass, density_activation="leaky_relu")
        ref = render_fast(field, occ, o[:20], d[:20], 0.5, 5.5, S, None, backend="torch_ref", **kw)  # type: ignore[arg-type]
        out = render_fast(field, occ, o[:20], d[:20], 0.5, 5.5, S, None, backend=be, count_candidates=False, **kw)  # type: ignore[arg-type]
        assert float((out.rgb - ref.rgb).abs().max()) <= TOL and out.samples_candidate == -1


def test_optical_thickness_cap_matches_volume() -> None:
    assert MAX_OPTICAL_THICKNESS == volume.MAX_OPTICAL_THICKNESS
