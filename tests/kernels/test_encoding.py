"""Positional encoding: layout, widths and values against hand-written formulas."""

from __future__ import annotations

import math

import pytest
import torch

from kilonerf.kernels.encoding import encoded_dim, grouped_encoding_order, positional_encoding, positional_encoding_grouped


def test_widths_of_the_papers_encodings() -> None:
    assert encoded_dim(3, 10) == 63
    assert encoded_dim(3, 4) == 27
    assert positional_encoding(torch.zeros(5, 3), 10).shape == (5, 63)
    assert positional_encoding(torch.zeros(2, 7, 3), 4).shape == (2, 7, 27)


def test_values_raw_input_then_sin_cos_per_power_of_two_without_pi() -> None:
    x = [0.5, -1.0, 2.0]
    expected = list(x)
    for freq in (1.0, 2.0):  # 2^0, 2^1: no factor of pi
        expected += [math.sin(freq * v) for v in x]
        expected += [math.cos(freq * v) for v in x]
    got = positional_encoding(torch.tensor([x], dtype=torch.float64), 2)
    torch.testing.assert_close(got[0], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_highest_frequency_is_two_to_the_l_minus_one() -> None:
    x = torch.tensor([[0.3, 0.0, 0.0]], dtype=torch.float64)
    enc = positional_encoding(x, 10)
    # Last block: the 3 cosines of 2^9 x.
    assert enc[0, -3].item() == pytest.approx(math.cos(512 * 0.3), abs=1e-12)
    assert enc[0, -6].item() == pytest.approx(math.sin(512 * 0.3), abs=1e-12)


def test_zero_frequencies_is_identity_and_batches_are_independent() -> None:
    x = torch.randn(4, 3)
    assert torch.equal(positional_encoding(x, 0), x)
    batched = positional_encoding(x.reshape(2, 2, 3), 4)
    torch.testing.assert_close(batched.reshape(4, 27), positional_encoding(x, 4))


def test_grouped_encoding_is_a_column_permutation() -> None:
    x = torch.rand(50, 3) * 2 - 1
    for freqs in (0, 1, 4, 10):
        order = grouped_encoding_order(3, freqs)
        assert sorted(order) == list(range(encoded_dim(3, freqs)))
        expected = positional_encoding(x, freqs)[:, order]
        torch.testing.assert_close(positional_encoding_grouped(x, freqs), expected, atol=0, rtol=0)
