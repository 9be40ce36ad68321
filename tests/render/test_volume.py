"""Reference volume rendering: a hand-computed compositing case, sample placement, render_dense."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kilonerf.render.dense import render_dense
from kilonerf.render.packed import packed_composite
from kilonerf.render.volume import composite, composite_weights, stratified_samples, uniform_samples

E = math.exp


def test_three_samples_by_hand() -> None:
    sigma = torch.tensor([[1.0, 2.0, 0.5]], dtype=torch.float64)
    deltas = torch.tensor([[0.5, 0.5, 1.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    rgb = torch.eye(3, dtype=torch.float64)[None]  # red, green, blue samples
    background = torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64)

    out = composite(sigma * deltas, rgb, t, background)

    # Transmittance before each sample: 1, e^-0.5, e^-1.5; the optical depths telescope to 2.
    w = [1 - E(-0.5), E(-0.5) * (1 - E(-1.0)), E(-1.5) * (1 - E(-0.5))]
    exp = dict(rtol=0, atol=1e-12)
    torch.testing.assert_close(out.weights[0], torch.tensor(w, dtype=torch.float64), **exp)
    torch.testing.assert_close(out.acc[0], torch.tensor(1 - E(-2.0), dtype=torch.float64), **exp)
    rest = E(-2.0)
    want_rgb = [w[0] + rest * 0.2, w[1] + rest * 0.4, w[2] + rest * 0.6]
    torch.testing.assert_close(out.rgb[0], torch.tensor(want_rgb, dtype=torch.float64), **exp)
    torch.testing.assert_close(out.depth[0], torch.tensor(w[0] * 1 + w[1] * 2 + w[2] * 3, dtype=torch.float64), **exp)

    black = composite(sigma * deltas, rgb, t, None)
    torch.testing.assert_close(black.rgb[0], torch.tensor(w, dtype=torch.float64), **exp)


def _product_reference(tau: Tensor, trans_in: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """The obvious loop: T *= 1 - alpha, a ray stops at the first T <= threshold."""
    w = torch.zeros_like(tau)
    trans = trans_in.clone()
    for r in range(tau.shape[0]):
        for i in range(tau.shape[1]):
            if trans[r] <= threshold:
                break
            alpha = 1 - math.exp(-float(tau[r, i]))
            w[r, i] = alpha * trans[r]
            trans[r] = trans[r] * (1 - alpha)
    return w, trans


def test_composite_weights_match_the_product_loop_across_batches() -> None:
    """Split into two batches of packed samples (trans_in carried over), with rays of no
    samples and early termination, the weights equal the sample-by-sample product loop."""
    g = torch.Generator().manual_seed(4)
    n, s, thr = 9, 14, 0.05
    tau = torch.rand(n, s, generator=g, dtype=torch.float64) * 0.6
    tau[2] = 0.0
    tau[5, 3] = 1e30  # an opaque sample: the ray ends there, later rays are unaffected
    keep = torch.rand(n, s, generator=g) < 0.7
    keep[7] = False
    tau_k = torch.where(keep, tau, 0.0)
    ref_w, ref_t = _product_reference(tau_k, torch.ones(n, dtype=torch.float64), thr)
    trans = torch.ones(n, dtype=torch.float64)
    got = torch.zeros_like(tau)
    for cols in (slice(0, 6), slice(6, s)):
        k = keep[:, cols]
        ray_id = torch.arange(n)[:, None].expand(n, k.shape[1])[k]
        w, alpha, trans = composite_weights(tau[:, cols][k], ray_id, n, trans_in=trans, threshold=thr)
        torch.testing.assert_close(alpha, -torch.expm1(-tau[:, cols][k].clamp_max(30)))
        part = torch.zeros(n, k.shape[1], dtype=torch.float64)
        part[k] = w
        got[:, cols] = part
    torch.testing.assert_close(got, ref_w, rtol=0, atol=1e-12)
    live = ref_t > thr
    torch.testing.assert_close(trans[live], ref_t[live], rtol=1e-12, atol=0)
    assert float(got[5, 4:].abs().max()) == 0.0 and float(got[7].abs().max()) == 0.0


def test_composite_weights_gradient_is_finite_at_opaque_samples() -> None:
    tau = torch.tensor([0.5, 1e6, 0.3], dtype=torch.float64, requires_grad=True)
    w, _, _ = composite_weights(tau, torch.zeros(3, dtype=torch.int64), 1)
    (w * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).sum().backward()
    assert torch.isfinite(tau.grad).all() and float(w.detach()[2]) < 1e-12


def test_packed_composite_matches_the_dense_composite() -> None:
    g = torch.Generator().manual_seed(1)
    n, s = 7, 12
    tau = torch.rand(n, s, generator=g, dtype=torch.float64) * 2.0
    keep = torch.rand(n, s, generator=g) < 0.6
    keep[3] = False  # a ray with no samples at all
    rgb = torch.rand(n, s, 3, generator=g, dtype=torch.float64)
    t = torch.arange(s, dtype=torch.float64).expand(n, s)
    bg = torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64)
    ref = composite(torch.where(keep, tau, 0.0), rgb, t, bg)
    ray_id = torch.arange(n)[:, None].expand(n, s)[keep]
    weights, _, _ = composite_weights(tau[keep], ray_id, n)
    color, acc = packed_composite(weights, rgb[keep], ray_id, n, bg)
    torch.testing.assert_close(weights, ref.weights[keep], rtol=0, atol=1e-12)
    torch.testing.assert_close(color, ref.rgb, rtol=0, atol=1e-12)
    torch.testing.assert_close(acc, ref.acc, rtol=0, atol=1e-12)
    torch.testing.assert_close(color[3], bg)


def test_stratified_samples_one_per_bin() -> None:
    near = torch.tensor([1.0, 2.0, 0.0])
    far = torch.tensor([3.0, 6.0, 0.5])
    s = 8
    step = (far - near) / s
    lower = near[:, None] + torch.arange(s) * step[:, None]
    gen = torch.Generator().manual_seed(0)
    t, deltas = stratified_samples(near.repeat(200), far.repeat(200), s, perturb=True, generator=gen)
    t = t.reshape(200, 3, s)
    assert bool((t >= lower - 1e-6).all()) and bool((t <= lower + step[:, None] + 1e-6).all())
    # Jitter fills each bin rather than sitting at one spot.
    frac = (t - lower) / step[:, None]
    assert float(frac.min()) < 0.05 and float(frac.max()) > 0.95
    torch.testing.assert_close(deltas.reshape(200, 3, s)[0], step[:, None].expand(3, s))

    again, _ = stratified_samples(near.repeat(200), far.repeat(200), s, True, torch.Generator().manual_seed(0))
    assert torch.equal(again.reshape(200, 3, s), t)
    centres, _ = stratified_samples(near, far, s, perturb=False)
    torch.testing.assert_close(centres, lower + 0.5 * step[:, None])


def test_uniform_samples_include_both_ends() -> None:
    near = torch.tensor([1.0, 2.0])
    far = torch.tensor([3.0, 2.5])
    t, deltas = uniform_samples(near, far, 5)
    torch.testing.assert_close(t[:, 0], near)
    torch.testing.assert_close(t[:, -1], far)
    torch.testing.assert_close(deltas, ((far - near) / 4)[:, None].expand(2, 5))
    torch.testing.assert_close(t[1], torch.tensor([2.0, 2.125, 2.25, 2.375, 2.5]))


class BlobField:
    """A smooth density bump with position-dependent colour."""

    def density(self, points: Tensor) -> Tensor:
        return self.forward(points, torch.zeros_like(points))[0]

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        sigma = 4.0 * torch.relu(1.0 - points.norm(dim=-1))
        rgb = torch.sigmoid(points + 0.3 * dirs)
        return sigma, rgb


class ConstantField:
    def __init__(self, sigma: float, rgb: tuple[float, float, float]) -> None:
        self.sigma, self.rgb = sigma, torch.tensor(rgb)

    def density(self, points: Tensor) -> Tensor:
        return torch.full(points.shape[:1], self.sigma)

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        return self.density(points), self.rgb.expand(points.shape[0], 3)


class Masked(BlobField):
    """The blob with zero density wherever ``keep`` is False."""

    def forward(self, points: Tensor, dirs: Tensor) -> tuple[Tensor, Tensor]:
        sigma, rgb = super().forward(points, dirs)
        return torch.where(keep(points), sigma, torch.zeros_like(sigma)), rgb


def keep(points: Tensor) -> Tensor:
    return (points[:, 0] > 0.1) | (points[:, 2] < -0.3)


def rays(n: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    origins = torch.randn(n, 3, generator=gen) * 0.2 + torch.tensor([0.0, 0.0, 3.0])
    dirs = torch.tensor([0.0, 0.0, -1.0]) + 0.2 * torch.randn(n, 3, generator=gen)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    return origins, dirs, torch.full((n,), 1.5), torch.full((n,), 4.5)


def test_sample_mask_equals_zero_density_outside_the_mask() -> None:
    origins, dirs, near, far = rays(64)
    bg = torch.tensor([1.0, 1.0, 1.0])
    for sampling in ("uniform", "stratified", "centers"):
        masked = render_dense(BlobField(), origins, dirs, near, far, 48, bg, sampling=sampling,
                              generator=torch.Generator().manual_seed(1), sample_mask=keep)  # fmt: skip
        zeroed = render_dense(Masked(), origins, dirs, near, far, 48, bg, sampling=sampling,
                              generator=torch.Generator().manual_seed(1))  # fmt: skip
        for a, b in ((masked.rgb, zeroed.rgb), (masked.acc, zeroed.acc), (masked.depth, zeroed.depth)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
        full = render_dense(BlobField(), origins, dirs, near, far, 48, bg, sampling=sampling,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
        assert float((full.acc - masked.acc).max()) > 0.05  # the mask really removed something


def test_constant_medium_matches_beer_lambert() -> None:
    origins, dirs, near, far = rays(4)
    field = ConstantField(0.7, (0.1, 0.5, 0.9))
    bg = torch.tensor([1.0, 0.0, 0.0])
    for sampling, length in (("centers", 3.0), ("stratified", 3.0), ("uniform", 3.0 * 32 / 31)):
        out = render_dense(field, origins, dirs, near, far, 32, bg, sampling=sampling)
        acc = 1 - math.exp(-0.7 * length)  # uniform: 32 steps of (far - near) / 31
        torch.testing.assert_close(out.acc, torch.full((4,), acc), rtol=0, atol=1e-5)
        torch.testing.assert_close(out.rgb[0], acc * torch.tensor([0.1, 0.5, 0.9]) + (1 - acc) * bg, rtol=0, atol=1e-5)


def test_empty_segment_gives_background_only() -> None:
    origins, dirs, near, _ = rays(4)
    bg = torch.tensor([0.3, 0.6, 0.9])
    out = render_dense(ConstantField(50.0, (0.0, 0.0, 0.0)), origins, dirs, near, near, 16, bg, sampling="stratified")
    torch.testing.assert_close(out.rgb, bg.expand(4, 3))
    assert float(out.acc.abs().max()) == 0.0
