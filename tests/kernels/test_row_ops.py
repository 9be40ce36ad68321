"""Row kernels against their torch twins: the teacher's grid lookups (kn_grid.c), the row Adam
steps (kn_adam.c), the in-place-accumulating row gather, and the row-skipping Adam against
torch.optim.Adam."""

from __future__ import annotations

import pytest
import torch

from kilonerf.fields.grid_teacher import GridTeacherField, upgrade_state
from kilonerf.kernels.adam import indexed_adam_, row_adam_
from kilonerf.kernels.grid_ops import grid_lerp
from kilonerf.kernels.native import NoCompiler, load_library
from kilonerf.kernels.row_gather import gather_rows
from kilonerf.train.lazy_adam import LazyRowAdam


def _native_or_skip() -> None:
    try:
        load_library()
    except NoCompiler:
        pytest.skip("no C compiler")


@pytest.mark.parametrize("channels", [1, 3, 12])
def test_compiled_lerp_and_its_gradient_match_torch(channels: int) -> None:
    _native_or_skip()
    g = torch.Generator().manual_seed(channels)
    rows, n = 300, 700
    idx = torch.randint(0, rows, (n, 8), generator=g, dtype=torch.int32)
    idx[:50] = 7  # many samples on one node: the scatter must add them all
    w = torch.rand(n, 8, generator=g)
    probe = torch.randn(n, channels, generator=g)
    results = []
    for native in (True, False):
        grid = torch.randn(rows, channels, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
        out = grid_lerp(grid, channels, idx, w, native=native)
        (out * probe).sum().backward()
        results.append((out.detach(), grid.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-5)
    assert torch.allclose(results[0][1], results[1][1], atol=1e-4)
    assert results[0][1][7].abs().sum() > 0


def test_lerp_gradient_goes_into_an_existing_buffer_in_place() -> None:
    idx = torch.arange(8, dtype=torch.int32)[None]
    w = torch.full((1, 8), 0.125)
    grid = torch.zeros(2, 2, 2, 1, requires_grad=True)
    (plain,) = torch.autograd.grad(grid_lerp(grid, 1, idx, w).sum(), grid)  # no buffer: autograd's way
    assert torch.allclose(plain, torch.full_like(grid, 0.125))
    buffer = grid.grad = torch.zeros_like(grid)
    for _ in range(2):
        grid_lerp(grid, 1, idx, w).sum().backward()
    assert grid.grad is buffer and torch.allclose(buffer, torch.full_like(grid, 0.25))
    # In place means no whole-grid gradient handed to autograd (which backward() would then add
    # into the buffer, giving the same .grad): torch.autograd.grad sees none.
    (seen,) = torch.autograd.grad(grid_lerp(grid, 1, idx, w).sum(), grid, allow_unused=True)
    assert seen is None and torch.allclose(buffer, torch.full_like(grid, 0.375))


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("c", [5, 1])  # one channel: the compiled kernel's branch-free loop
def test_row_adam_is_torch_adam_on_rows_with_gradient_and_skips_the_others(native: bool, c: int) -> None:
    if native:
        _native_or_skip()
    g = torch.Generator().manual_seed(0)
    rows = 64
    start = torch.randn(rows, c, generator=g)
    ref = torch.nn.Parameter(start.clone())
    opt = torch.optim.Adam([ref], lr=0.05, betas=(0.9, 0.99))
    param, m, v, grad = start.clone(), torch.zeros(rows, c), torch.zeros(rows, c), torch.zeros(rows, c)
    for step in range(1, 6):
        full = torch.randn(rows, c, generator=g)
        ref.grad = full.clone()
        opt.step()
        grad.copy_(full)
        assert row_adam_(param, grad, m, v, c, 0.05, (0.9, 0.99), 1e-8, step, native=native) == rows
        assert torch.all(grad == 0)
    assert torch.allclose(param, ref.detach(), atol=1e-5)
    # Rows without a gradient keep value and moments, the others move.
    grad[:10, c - 1] = 1.0
    before = (param.clone(), m.clone(), v.clone())
    assert row_adam_(param, grad, m, v, c, 0.05, (0.9, 0.99), 1e-8, 6, native=native) == 10
    for now, then in zip((param, m, v), before):
        assert torch.equal(now[10:], then[10:])
        assert not torch.equal(now[:10], then[:10])


def test_lazy_row_adam_matches_torch_adam_when_every_row_has_a_gradient() -> None:
    g = torch.Generator().manual_seed(1)
    grid = torch.nn.Parameter(torch.randn(6, 4, generator=g))
    dense = torch.nn.Parameter(torch.randn(3, 2, generator=g))
    ref = [torch.nn.Parameter(p.detach().clone()) for p in (grid, dense)]
    ours = LazyRowAdam([{"params": [grid], "lr": 0.1}, {"params": [dense], "lr": 0.01}], rows={grid: 4}, betas=(0.9, 0.99))
    theirs = torch.optim.Adam([{"params": [ref[0]], "lr": 0.1}, {"params": [ref[1]], "lr": 0.01}], betas=(0.9, 0.99))
    for _ in range(4):
        grads = [torch.randn(p.shape, generator=g) for p in (grid, dense)]
        ours.zero_grad()
        theirs.zero_grad()
        grid.grad = grads[0].clone() if grid.grad is None else grid.grad.add_(grads[0])
        dense.grad = grads[1].clone()
        ref[0].grad, ref[1].grad = grads[0].clone(), grads[1].clone()
        if _ == 2:  # a penalty's gradient c * p on both, added by the optimiser
            ours.decay = {grid: 0.3, dense: 0.2}
            ref[0].grad += 0.3 * ref[0].detach()
            ref[1].grad += 0.2 * ref[1].detach()
        ours.step()
        theirs.step()
        ours.decay = {}
    assert torch.allclose(grid, ref[0], atol=1e-5) and torch.allclose(dense, ref[1], atol=1e-6)
    assert torch.all(grid.grad == 0) and dense.grad is not None
    ours.zero_grad()
    assert dense.grad is None and grid.grad is not None  # the grid keeps its buffer


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("c", [3, 1])
def test_decay_adds_the_penalty_gradient_on_every_row(native: bool, c: int) -> None:
    """``decay``: Adam on grad + decay * param, every row (with and without a data gradient)."""
    if native:
        _native_or_skip()
    g = torch.Generator().manual_seed(2)
    rows, decay = 16, 0.7
    ours = torch.randn(rows, c, generator=g)
    ref = torch.nn.Parameter(ours.clone())
    opt = torch.optim.Adam([ref], lr=0.05, betas=(0.9, 0.99))
    m, v, grad = torch.zeros(rows, c), torch.zeros(rows, c), torch.zeros(rows, c)
    for step in range(1, 4):
        data = torch.randn(rows, c, generator=g) * (torch.arange(rows) % 2 == 0)[:, None]  # odd rows: none
        ref.grad = data + decay * ref.detach()
        opt.step()
        grad.copy_(data)
        assert row_adam_(ours, grad, m, v, c, 0.05, (0.9, 0.99), 1e-8, step, native=native, decay=decay) == rows
        assert torch.all(grad == 0)
    assert torch.allclose(ours, ref.detach(), atol=1e-5)


def test_channel_first_teacher_state_loads_transposed() -> None:
    field = GridTeacherField(torch.zeros(3), torch.ones(3), 5, 4, feature_dim=6, hidden=8)
    with torch.no_grad():
        field.feature_grid.normal_()
        field.density_grid.normal_()
    state = field.state_dict()
    legacy = {k: v for k, v in state.items() if k != "feature_layout"}
    legacy["feature_grid"] = state["feature_grid"].permute(3, 0, 1, 2).contiguous()
    assert torch.equal(upgrade_state(legacy)["feature_grid"], state["feature_grid"])
    loaded = GridTeacherField.from_state_dict(legacy)
    pts, dirs = torch.rand(20, 3), torch.nn.functional.normalize(torch.randn(20, 3), dim=-1)
    for a, b in zip(loaded(pts, dirs), field(pts, dirs)):
        assert torch.allclose(a, b)


def test_gather_rows_adds_the_index_select_gradient_into_the_buffer() -> None:
    g = torch.Generator().manual_seed(2)
    source = torch.randn(6, 4, 3, generator=g).requires_grad_(True)
    ref = source.detach().clone().requires_grad_(True)
    index = torch.tensor([5, 1, 1, 3])
    probe = torch.randn(4, 4, 3, generator=g)
    buffer = source.grad = torch.zeros_like(source)
    for _ in range(2):  # twice: the second adds to the first
        (gather_rows(source, index) * probe).sum().backward()
        (ref.index_select(0, index) * probe).sum().backward()
    assert source.grad is buffer and torch.allclose(buffer, ref.grad)
    flat = gather_rows(source, torch.tensor([7, 0]), (24, 3))
    assert torch.equal(flat, source.detach().reshape(24, 3)[[7, 0]])
    with torch.no_grad():
        assert gather_rows(source, index).grad_fn is None


@pytest.mark.parametrize("native", [True, False])
def test_indexed_adam_is_adam_on_the_listed_rows(native: bool) -> None:
    if native:
        _native_or_skip()
    g = torch.Generator().manual_seed(3)
    k, rows = 7, torch.tensor([4, 0, 5])
    param = torch.randn(k, 2, 3, generator=g)
    ref = torch.nn.Parameter(param[rows].clone())
    opt = torch.optim.Adam([ref], lr=0.02)
    m, v = torch.zeros_like(param), torch.zeros_like(param)
    untouched = param[[1, 2, 3, 6]].clone()
    for step in range(1, 5):
        grad = torch.randn(3, 2, 3, generator=g)
        ref.grad = grad.clone()
        opt.step()
        bc = torch.full((3,), float(step))
        indexed_adam_(param, grad, m, v, rows, 1 - 0.9**bc, 1 - 0.999**bc, 0.02, (0.9, 0.999), 1e-8, native=native)
    assert torch.allclose(param[rows], ref.detach(), atol=1e-6)
    assert torch.equal(param[[1, 2, 3, 6]], untouched)
