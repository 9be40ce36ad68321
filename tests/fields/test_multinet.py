"""The network grid (indexing, local coordinates) and the tiny-MLP grid field."""

from __future__ import annotations

import pytest
import torch

from kilonerf.errors import KiloNerfError
from kilonerf.kernels.encoding import positional_encoding
from kilonerf.fields.multinet import MultiNetField
from kilonerf.fields.network_grid import NetworkGrid, grid_resolution

LEGO_NSVF_BOX = torch.tensor([[-0.637787, -1.140016, -0.344656], [0.633744, 1.148737, 1.002206]])


def test_grid_resolution_lego_and_cube() -> None:
    assert grid_resolution(LEGO_NSVF_BOX) == (9, 16, 10)
    assert grid_resolution(torch.tensor([[0.0, 0, 0], [1.0, 1, 1]])) == (16, 16, 16)
    assert grid_resolution(torch.tensor([[0.0, 0, 0], [2.0, 1, 0.5]]), max_res=8) == (8, 4, 2)
    with pytest.raises(KiloNerfError):
        grid_resolution(torch.tensor([[0.0, 0, 0], [1.0, 0, 1]]))


def test_locate_corners_edges_faces() -> None:
    grid = NetworkGrid.from_bbox(LEGO_NSVF_BOX)
    lo, hi = LEGO_NSVF_BOX
    rx, ry, rz = grid.res
    net, local = grid.locate(torch.stack([lo, hi]))
    assert net.tolist() == [0, grid.num_networks - 1]
    assert torch.equal(local, torch.tensor([[-1.0, -1, -1], [1.0, 1, 1]]))
    # The other six box corners: each axis picks cell 0 (local -1) or the last cell (local +1).
    for mask in range(1, 7):
        pick = torch.tensor([(mask >> a) & 1 for a in range(3)], dtype=torch.bool)
        corner = torch.where(pick, hi, lo)[None]
        net, local = grid.locate(corner)
        cell = [(r - 1) if bool(p) else 0 for r, p in zip(grid.res, pick)]
        assert int(net) == (cell[0] * ry + cell[1]) * rz + cell[2]
        assert torch.equal(local[0], torch.where(pick, 1.0, -1.0))
    # A point on the max-x face, mid y/z: last x cell, local x = 1.
    mid = (lo + hi) / 2
    net, local = grid.locate(torch.stack([torch.stack([hi[0], mid[1], mid[2]])]))
    assert int(net) // (ry * rz) == rx - 1 and float(local[0, 0]) == 1.0
    # On an edge (max x, min y), mid z.
    net, local = grid.locate(torch.stack([hi[0], lo[1], mid[2]])[None])
    assert int(net) // (ry * rz) == rx - 1 and (int(net) // rz) % ry == 0
    assert local[0, 0] == 1.0 and local[0, 1] == -1.0


def test_locate_interior_outside_and_inverse() -> None:
    grid = NetworkGrid(bbox=torch.tensor([[0.0, 0, 0], [4.0, 2, 1]]), res=(4, 2, 1))
    pts = torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.25, 0.75], [3.75, 1.5, 0.0], [4.01, 1, 0.5], [-1e-4, 1, 0.5]])
    net, local = grid.locate(pts)
    # Cells are unit cubes here: (ix * 2 + iy) * 1 + iz.
    assert net.tolist() == [0, 2, 7, -1, -1]
    assert torch.allclose(local[:3], torch.tensor([[0.0, 0, 0], [-1.0, -0.5, 0.5], [0.5, 0, -1]]))
    torch.manual_seed(0)
    inside = torch.rand(100, 3) * torch.tensor([4.0, 2, 1])
    net, local = grid.locate(inside)
    assert bool((net >= 0).all()) and bool((local.abs() <= 1).all())
    assert torch.allclose(grid.to_world(net, local), inside, atol=1e-6)


def _small_field(**kw: object) -> MultiNetField:
    return MultiNetField(torch.tensor([[-1.0, -1, -1], [1.0, 1, 1]]), max_res=2, **kw)  # type: ignore[arg-type]


def test_parameter_count_and_layout() -> None:
    field = MultiNetField(LEGO_NSVF_BOX)
    assert field.res == (9, 16, 10) and field.num_networks == 1440
    assert field.params_per_network == 6212
    assert sum(p.numel() for p in field.parameters()) == 6212 * 1440
    shapes = [tuple(w.shape[1:]) for w in field.weights]
    assert shapes == [(63, 32), (32, 32), (32, 33), (59, 32), (32, 3)]
    field.params().check()
    view = field.view_dependent_parameters()
    assert [tuple(p.shape) for p in view] == [(1440, 59, 32), (1440, 32), (1440, 32, 3), (1440, 3)]


def test_shared_and_independent_init() -> None:
    shared = _small_field(seed=3)
    for w in [*shared.weights, *shared.biases]:
        assert torch.equal(w, w[:1].expand_as(w))
    assert float(shared.weights[0].detach().abs().max()) <= 1.0 / 63**0.5
    again = _small_field(seed=3)
    assert all(torch.equal(a, b) for a, b in zip(shared.parameters(), again.parameters()))
    indep = _small_field(shared_init=False, seed=3)
    assert not torch.equal(indep.weights[0][0], indep.weights[0][1])


def _manual(field: MultiNetField, k: int, local: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w, b = field.weights, field.biases
    h = torch.relu(positional_encoding(local, 10) @ w[0][k] + b[0][k])
    h = torch.relu(h @ w[1][k] + b[1][k])
    o = h @ w[2][k] + b[2][k]
    h = torch.relu(torch.cat([o[:, 1:], positional_encoding(d, 4)], -1) @ w[3][k] + b[3][k])
    return o[:, 0], torch.sigmoid(h @ w[4][k] + b[4][k])


def test_forward_matches_manual_network_and_zero_outside() -> None:
    field = _small_field(shared_init=False)
    torch.manual_seed(1)
    pts = torch.rand(64, 3) * 2.4 - 1.2  # some outside the box
    dirs = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    sigma, rgb = field(pts, dirs)
    net, local = field.grid.locate(pts)
    outside = net < 0
    assert bool(outside.any()) and bool((~outside).any())
    assert bool((sigma[outside] == 0).all()) and bool((rgb[outside] == 0).all())
    for k in net[~outside].unique().tolist():
        m = net == k
        raw, c = _manual(field, k, local[m], dirs[m])
        assert torch.allclose(sigma[m], torch.relu(raw), atol=1e-5)
        assert torch.allclose(rgb[m], c, atol=1e-5)
    assert torch.allclose(field.density(pts), sigma, atol=1e-6)


def test_density_activation_and_gradients() -> None:
    field = _small_field(shared_init=False)
    torch.manual_seed(2)
    pts = torch.rand(256, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(256, 3), dim=-1)
    sigma, rgb = field(pts, dirs, activation="leaky_relu")
    assert bool((sigma < 0).any())  # LeakyReLU lets slightly negative density through
    (sigma.sum() + rgb.sum()).backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in field.parameters())
    assert bool((field.density(pts) >= 0).all()) and bool((field(pts, dirs)[0] >= 0).all())  # ReLU by default
    with pytest.raises(KiloNerfError):
        field(pts, dirs, activation="softplus")


def test_config_rebuilds_identical_field() -> None:
    field = _small_field(shared_init=False, seed=5)
    clone = MultiNetField(**field.config())  # type: ignore[arg-type]
    clone.load_state_dict(field.state_dict())
    pts = torch.rand(32, 3) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1)
    assert all(torch.equal(a, b) for a, b in zip(field(pts, dirs), clone(pts, dirs)))


def test_box_cells_columns_match_broadcast_arithmetic() -> None:
    # The per-axis form must give bit for bit what (N, 3)-with-(3,) arithmetic gives, on faces
    # and cell boundaries too (the compiled renderer repeats that arithmetic).
    from kilonerf.fields.box_cells import box_cells, box_inside

    bbox = torch.tensor([[-0.637, -1.153, -0.339], [0.641, 1.149, 1.037]])
    res = (9, 16, 10)
    gen = torch.Generator().manual_seed(0)
    k = torch.randint(0, 17, (3000, 3), generator=gen).float() / 16
    pts = torch.cat([bbox[0] + (torch.rand(3000, 3, generator=gen) * 1.2 - 0.1) * (bbox[1] - bbox[0]),
                     bbox[0] + k * (bbox[1] - bbox[0]), bbox, torch.nextafter(bbox, bbox + 1)])
    u = (pts - bbox[0]) / (bbox[1] - bbox[0]) * torch.tensor(res, dtype=torch.float32)
    cell = torch.minimum(torch.floor(u).long().clamp_min(0), torch.tensor(res) - 1)
    inside = ((pts >= bbox[0]) & (pts <= bbox[1])).all(dim=-1)
    flat = torch.where(inside, (cell[:, 0] * res[1] + cell[:, 1]) * res[2] + cell[:, 2], -1)
    cells = box_cells(pts, bbox, res)
    assert torch.equal(torch.stack(cells.u, 1), u) and torch.equal(cells.flat(res), flat)
    assert torch.equal(box_inside(pts, bbox), inside) and not bool(inside.all()) and bool(inside.any())
    # Columns of any shape give the same as the flattened points.
    cols = [pts[:, a].reshape(-1, 2) for a in range(3)]  # 6004 points
    assert torch.equal(box_cells(cols, bbox, res).flat(res).reshape(-1), flat)
