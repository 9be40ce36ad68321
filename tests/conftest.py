"""Shared fixtures: the read-only real scenes beside the checkout."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_scene(name: str) -> Path:
    """Path to ``../shared/data/NAME``; skips the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture
def lego_100() -> Path:
    return shared_scene("lego_100")


@pytest.fixture
def lego_200() -> Path:
    return shared_scene("lego_200")


@pytest.fixture
def fern_llff() -> Path:
    return shared_scene("fern_llff")
