"""The fast renderer against the dense reference renderer."""

from __future__ import annotations

import ctypes

import pytest
import torch

from kilonerf.data.cameras import ray_box_intersect
from kilonerf.fields.multinet import MultiNetField
from kilonerf.kernels import GroupedBackend, MultiNetParams
from kilonerf.kernels.fused import FusedRenderer, FusedResult
from kilonerf.kernels.torch_ref import TorchRefBackend
from kilonerf.render.dense import render_dense
from kilonerf.render.fast import MAX_PASS_SAMPLES, render_fast
from kilonerf.occupancy.grid import OccupancyGrid

BOX = torch.tensor([[-1.0, -0.8, -0.6], [1.0, 0.8, 0.6]])
BG = torch.tensor([1.0, 0.9, 0.8])
S = 96


@pytest.fixture(scope="module")
def field() -> MultiNetField:
    f = MultiNetField(BOX, max_res=5, shared_init=False, seed=7)
    with torch.no_grad():
        f.biases[2][:, 0] += 2.0  # enough density that rays are far from transparent
    return f


@pytest.fixture(scope="module")
def rays() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    n = 300
    origins = torch.nn.functional.normalize(torch.randn((n, 3), generator=gen), dim=-1) * 3.0
    target = (torch.rand((n, 3), generator=gen) * 2 - 1) * 1.3  # some rays miss the box
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    origins[:5] = torch.rand((5, 3), generator=gen) * 0.5  # a few start inside the box
    return origins, dirs


def _sphere_occupancy(res: tuple[int, int, int] = (20, 16, 12), radius: float = 0.7) -> OccupancyGrid:
    size = (BOX[1] - BOX[0]) / torch.tensor(res)
    axes = [BOX[0, a] + (torch.arange(res[a]) + 0.5) * size[a] for a in range(3)]
    centers = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return OccupancyGrid.from_dense(centers.norm(dim=-1) < radius, BOX)


def test_matches_dense_without_skipping(field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor]) -> None:
    o, d = rays
    near, far = torch.full((o.shape[0],), 0.5), torch.full((o.shape[0],), 5.5)
    with torch.no_grad():
        ref = render_dense(field, o, d, near, far, S, BG)
    out = render_fast(field, None, o, d, near, far, S, BG, ert_threshold=0.0, use_occupancy=False)
    assert 0.2 < float(ref.acc.mean()) < 0.9
    assert float((out.rgb - ref.rgb).abs().mean()) <= 1e-4
    assert float((out.rgb - ref.rgb).abs().max()) <= 1e-4
    assert torch.allclose(out.acc, ref.acc, atol=1e-5) and torch.allclose(out.depth, ref.depth, atol=1e-4)
    # Exactly the samples inside the network grid were evaluated.
    t = near[:, None] + torch.arange(S) * ((far - near) / (S - 1))[:, None]
    inside = field.grid.inside((o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3))
    assert out.samples_evaluated == out.samples_candidate == int(inside.sum())
    per_ray = inside.reshape(-1, S).sum(dim=1)
    # One chunk: the longest ray sets the number of passes of 8, 16, 32, 64, 64, ... samples.
    taken, passes, per = 0, 0, 8
    while taken < int(per_ray.max()):
        taken, passes, per = taken + per, passes + 1, min(2 * per, MAX_PASS_SAMPLES)
    assert passes == 3 and out.passes == passes


def test_matches_dense_with_box_near_far_and_pass_sizes(field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor]) -> None:
    o, d = rays
    near, far, _ = ray_box_intersect(o, d, BOX)
    far = torch.maximum(far, near + 1e-3)
    with torch.no_grad():
        ref = render_dense(field, o, d, near, far, S, BG)
    for per_pass, chunk in [(1, 1 << 15), (3, 37), (16, 1 << 15)]:
        out = render_fast(
            field, None, o, d, near, far, S, BG, ert_threshold=0.0, use_occupancy=False,
            samples_per_pass=per_pass, ray_chunk=chunk,
        )
        assert float((out.rgb - ref.rgb).abs().max()) <= 1e-4


def _sparse_occupancy() -> OccupancyGrid:
    """Three small balls in a finer grid, so that the coarse skip grid has empty cells."""
    res = (64, 52, 40)
    size = (BOX[1] - BOX[0]) / torch.tensor(res)
    axes = [BOX[0, a] + (torch.arange(res[a]) + 0.5) * size[a] for a in range(3)]
    centers = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    dense = torch.zeros(res, dtype=torch.bool)
    for c in ([0.5, 0.2, 0.0], [-0.4, -0.3, 0.2], [0.0, 0.4, -0.3]):
        dense |= (centers - torch.tensor(c)).norm(dim=-1) < 0.2
    return OccupancyGrid.from_dense(dense, BOX)


@pytest.mark.parametrize("kind", ["sphere", "sparse"])
def test_occupancy_equals_dense_sample_mask(
    field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor], kind: str
) -> None:
    o, d = rays
    occ = _sphere_occupancy() if kind == "sphere" else _sparse_occupancy()
    if kind == "sparse":
        assert 0.2 < float(occ.coarse_skip_grid(8).float().mean()) < 0.9
    near, far = 0.5, 5.5
    n = o.shape[0]
    with torch.no_grad():
        ref = render_dense(field, o, d, torch.full((n,), near), torch.full((n,), far), S, BG, sample_mask=occ.lookup)
    out = render_fast(field, occ, o, d, near, far, S, BG, ert_threshold=0.0)
    assert float((out.rgb - ref.rgb).abs().max()) <= 1e-4
    assert torch.allclose(out.depth, ref.depth, atol=1e-4)
    t = near + torch.arange(S) * ((far - near) / (S - 1))
    pts = (o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3)
    assert out.samples_evaluated == int(occ.lookup(pts).sum()) > 0
    full = render_fast(field, None, o, d, near, far, S, BG, ert_threshold=0.0, use_occupancy=False)
    assert out.samples_evaluated < 0.6 * full.samples_evaluated


def test_early_termination_bounded_error(rays: tuple[torch.Tensor, torch.Tensor]) -> None:
    o, d = rays
    opaque = MultiNetField(BOX, max_res=5, shared_init=False, seed=8)
    with torch.no_grad():
        opaque.biases[2][:, 0] += 20.0
    occ = _sphere_occupancy()
    exact = render_fast(opaque, occ, o, d, 0.5, 5.5, S, BG, ert_threshold=0.0)
    ert = render_fast(opaque, occ, o, d, 0.5, 5.5, S, BG, ert_threshold=0.01)
    assert float(exact.acc.max()) > 0.99
    assert ert.samples_evaluated < 0.8 * exact.samples_evaluated
    # The dropped tail has total weight <= the transmittance at termination (<= 0.01).
    assert float((ert.rgb - exact.rgb).abs().max()) <= 0.01 + 1e-5
    assert bool((ert.acc <= exact.acc + 1e-6).all())
    # Rays end at a sample, not at the end of a pass: the pass size does not change the image.
    for per_pass in (1, 3, 64):
        other = render_fast(opaque, occ, o, d, 0.5, 5.5, S, BG, ert_threshold=0.01, samples_per_pass=per_pass)
        _same_render(other, ert, same_samples=False)


def test_empty_occupancy_and_missing_rays(field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor]) -> None:
    o, d = rays
    empty = OccupancyGrid.from_dense(torch.zeros(4, 4, 4, dtype=torch.bool), BOX)
    out = render_fast(field, empty, o, d, 0.5, 5.5, S, BG)
    assert out.samples_evaluated == 0 and torch.allclose(out.rgb, BG.expand_as(out.rgb))
    away = torch.tensor([[5.0, 5.0, 5.0]]).expand(4, 3)
    dirs = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.1]]), dim=-1).expand(4, 3)
    miss = render_fast(field, _sphere_occupancy(), away, dirs, 0.5, 5.5, S, None, use_occupancy=True)
    assert miss.samples_evaluated == 0 and float(miss.rgb.abs().max()) == 0.0


# --- the native renderer (compiled `cpu` backend) -------------------------------------------


# cpu_backend: the fixture in conftest.py.


def _same_render(a: object, b: object, tol: float = 2e-6, same_samples: bool = True) -> None:
    assert float((a.rgb - b.rgb).abs().max()) <= tol  # type: ignore[attr-defined]
    assert float((a.acc - b.acc).abs().max()) <= tol  # type: ignore[attr-defined]
    assert float((a.depth - b.depth).abs().max()) <= 10 * tol  # type: ignore[attr-defined]
    if same_samples:
        assert a.samples_evaluated == b.samples_evaluated  # type: ignore[attr-defined]


def test_native_matches_dense_with_occupancy(field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor], cpu_backend: object) -> None:
    o, d = rays
    occ = _sparse_occupancy()
    n = o.shape[0]
    with torch.no_grad():
        ref = render_dense(field, o, d, torch.full((n,), 0.5), torch.full((n,), 5.5), S, BG, sample_mask=occ.lookup)
    out = render_fast(field, occ, o, d, 0.5, 5.5, S, BG, ert_threshold=0.0, backend=cpu_backend)  # type: ignore[arg-type]
    assert float((out.rgb - ref.rgb).abs().max()) <= 1e-4
    assert torch.allclose(out.depth, ref.depth, atol=1e-4)
    t = 0.5 + torch.arange(S) * (5.0 / (S - 1))
    pts = (o[:, None] + t[None, :, None] * d[:, None]).reshape(-1, 3)
    assert out.samples_evaluated == out.samples_candidate == int(occ.lookup(pts).sum()) > 0


def _wider_occupancy() -> OccupancyGrid:
    """Occupied ball on a box larger than the network grid's: the grid's own box test matters."""
    box = BOX * 1.3
    res = (26, 21, 16)
    size = (box[1] - box[0]) / torch.tensor(res)
    axes = [box[0, a] + (torch.arange(res[a]) + 0.5) * size[a] for a in range(3)]
    centers = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return OccupancyGrid.from_dense(centers.norm(dim=-1) < 1.1, box)


@pytest.mark.parametrize("kind", ["none", "sphere", "sparse", "wider"])
@pytest.mark.parametrize("ert", [0.0, 0.01])
def test_native_equals_torch_renderer(
    field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor], cpu_backend: object, kind: str, ert: float
) -> None:
    o, d = rays
    occ = {"none": None, "sphere": _sphere_occupancy(), "sparse": _sparse_occupancy(), "wider": _wider_occupancy()}[kind]
    kw = dict(ert_threshold=ert, use_occupancy=occ is not None)
    ref = render_fast(field, occ, o, d, 0.5, 5.5, S, BG, backend="torch_ref", **kw)  # type: ignore[arg-type]
    out = render_fast(field, occ, o, d, 0.5, 5.5, S, BG, backend=cpu_backend, **kw)  # type: ignore[arg-type]
    # With early termination the torch path's growing passes evaluate more samples past the
    # end of a ray than the native path's fixed ones; neither composites them.
    _same_render(out, ref, same_samples=ert == 0.0)
    assert out.samples_candidate == ref.samples_candidate  # counted behind terminations too
    quick = render_fast(field, occ, o, d, 0.5, 5.5, S, BG, backend=cpu_backend, count_candidates=False, **kw)  # type: ignore[arg-type]
    assert quick.samples_candidate == -1 and torch.equal(quick.rgb, out.rgb)


def test_native_tiles_pass_sizes_and_leaky_density(rays: tuple[torch.Tensor, torch.Tensor], cpu_backend: object) -> None:
    from kilonerf.kernels.fused import FusedRays
    from kilonerf.render.fast import _region, _sample_range, render_fused

    o, d = rays[0][:120], rays[1][:120]
    leaky = MultiNetField(BOX, max_res=5, shared_init=False, seed=9)
    occ = _sphere_occupancy()
    n = o.shape[0]
    near, far = ray_box_intersect(o, d, BOX)[:2]
    far = torch.maximum(far, near + 1e-3)
    step = (far - near) / (S - 1)
    k_lo, count = _sample_range(_region(leaky, occ), o, d, near, step, torch.full((n,), S - 1))  # type: ignore[arg-type]
    for per_pass in (1, 8):
        ref = render_fast(leaky, occ, o, d, near, far, S, None, backend="torch_ref", samples_per_pass=per_pass,
                          density_activation="leaky_relu")
        for tile in (1, 7, n):
            with torch.no_grad():
                fused = cpu_backend.fused_renderer(leaky.params(), o.device)  # type: ignore[attr-defined]
                res = render_fused(fused, leaky, occ, FusedRays(o, d, near, step, k_lo, count), 0.01, per_pass,
                                   False, "leaky_relu", tile)  # fmt: skip
            assert res.evaluated == ref.samples_evaluated
            assert float((res.rgb - ref.rgb).abs().max()) <= 2e-6 and float((res.acc - ref.acc).abs().max()) <= 2e-6
            assert res.seconds["mlp"] > 0.0 and min(res.seconds.values()) >= 0.0


def test_rejects_empty_passes(field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(ValueError, match="samples_per_pass"):
        render_fast(field, None, rays[0], rays[1], 0.5, 5.5, S, BG, use_occupancy=False, samples_per_pass=0)


class _Counting(FusedRenderer):
    """Delegates to another fused renderer and counts the calls."""

    def __init__(self, inner: FusedRenderer) -> None:
        self.inner, self.calls = inner, 0

    def render(self, *args, **kwargs) -> FusedResult:  # noqa: ANN002, ANN003
        self.calls += 1
        return self.inner.render(*args, **kwargs)


class _BorrowedFused(TorchRefBackend):
    """Not the compiled backend, yet it offers a fused renderer (the compiled one's): the
    renderer must ask for the capability, not check the backend's type."""

    def __init__(self, donor: GroupedBackend) -> None:
        super().__init__()
        self.donor, self.made = donor, []

    def fused_renderer(self, params: MultiNetParams, device: torch.device) -> FusedRenderer | None:
        inner = self.donor.fused_renderer(params, device)
        assert inner is not None
        self.made.append(_Counting(inner))
        return self.made[-1]


def test_renderer_asks_the_backend_for_a_fused_renderer(
    field: MultiNetField, rays: tuple[torch.Tensor, torch.Tensor], cpu_backend: object
) -> None:
    o, d = rays[0][:64], rays[1][:64]
    occ = _sphere_occupancy()
    backend = _BorrowedFused(cpu_backend)  # type: ignore[arg-type]
    with torch.no_grad():
        fused = render_fast(field, occ, o, d, 0.5, 5.5, S, None, backend=backend)
        plain = render_fast(field, occ, o, d, 0.5, 5.5, S, None, backend="torch_ref")
    assert [r.calls for r in backend.made] == [1] and TorchRefBackend().fused_renderer(field.params(), o.device) is None
    assert float((fused.rgb - plain.rgb).abs().max()) <= 2e-6 and fused.samples_evaluated == plain.samples_evaluated


def test_fused_renderer_refuses_a_struct_of_another_size(cpu_backend: object) -> None:
    from kilonerf.kernels.cpu_render import _RenderArgs, check_struct_size
    from kilonerf.kernels.native import NativeUnavailable

    lib = cpu_backend.lib  # type: ignore[attr-defined]
    check_struct_size(lib)  # the real library and its mirror agree
    assert int(lib.kn_render_args_size()) == ctypes.sizeof(_RenderArgs)

    class Shifted:
        @staticmethod
        def kn_render_args_size() -> int:
            return ctypes.sizeof(_RenderArgs) + 8  # a field added in C but not in the mirror

    with pytest.raises(NativeUnavailable, match="ctypes mirror"):
        check_struct_size(Shifted())  # type: ignore[arg-type]
