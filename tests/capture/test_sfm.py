"""The image pairs matched: every pair, or neighbours in order plus an orbit's loop closure."""

from __future__ import annotations

import pytest

from kilonerf.capture.sfm import SEQUENTIAL_OVERLAP, pairs_for
from kilonerf.errors import KiloNerfError


def test_exhaustive_pairs() -> None:
    names = [f"{i}.png" for i in range(6)]
    assert len(pairs_for(names, "exhaustive")) == 15


def test_sequential_pairs_reach_neighbours_and_close_the_loop() -> None:
    n = 60
    names = [f"{i}.png" for i in range(n)]
    pairs = {(int(a.split(".")[0]), int(b.split(".")[0])) for a, b in pairs_for(names, "sequential")}
    assert all(i < j for i, j in pairs)
    assert all((i, i + k) in pairs for i in range(n - SEQUENTIAL_OVERLAP) for k in range(1, SEQUENTIAL_OVERLAP + 1))
    assert (0, n - 1) in pairs and (1, n - 2) in pairs  # the orbit's end meets its start
    assert (0, 2 * SEQUENTIAL_OVERLAP) in pairs and (0, 4 * SEQUENTIAL_OVERLAP) in pairs
    assert (20, 35) not in pairs and len(pairs) < n * (n - 1) // 4


def test_unknown_matching() -> None:
    with pytest.raises(KiloNerfError, match="--matching"):
        pairs_for(["a", "b", "c"], "vocab")
