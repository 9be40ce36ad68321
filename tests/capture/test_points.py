"""points.ply: written and read back exactly; foreign or truncated files are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kilonerf.data.points import read_points, write_points
from kilonerf.errors import SceneError


def test_ply_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3)).astype(np.float32)
    cols = rng.integers(0, 256, size=(500, 3), dtype=np.uint8)
    write_points(tmp_path / "p.ply", pts, cols)
    got_pts, got_cols = read_points(tmp_path / "p.ply")
    np.testing.assert_array_equal(got_pts, pts)
    np.testing.assert_array_equal(got_cols, cols)
    assert (tmp_path / "p.ply").read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")


def test_ply_errors(tmp_path: Path) -> None:
    write_points(tmp_path / "p.ply", np.zeros((10, 3)), np.zeros((10, 3), np.uint8))
    data = (tmp_path / "p.ply").read_bytes()
    (tmp_path / "short.ply").write_bytes(data[:-20])
    with pytest.raises(SceneError, match="truncated"):
        read_points(tmp_path / "short.ply")
    (tmp_path / "ascii.ply").write_bytes(data.replace(b"binary_little_endian", b"ascii"))
    with pytest.raises(SceneError, match="not supported"):
        read_points(tmp_path / "ascii.ply")
    (tmp_path / "other.bin").write_bytes(b"hello")
    with pytest.raises(SceneError, match="not a PLY"):
        read_points(tmp_path / "other.bin")
