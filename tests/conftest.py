"""Shared fixtures: the read-only real scenes beside the checkout, and a tiny trained run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # The Triton kernels' tests run in Triton's interpreter here. It must be chosen before Triton
    # is first imported (by anything, torch included), since Triton's own library functions are
    # built for the interpreter or the GPU compiler when it loads.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# The compiled CPU backend's default is bf16 where the CPU has AMX; the tests compare its fp32
# path with the references at fp32 tolerances (the bf16 engines: tests/kernels/test_bf16.py).
os.environ.setdefault("KILONERF_CPU_PRECISION", "fp32")

from kilonerf.cli import main
from kilonerf.data.procedural import write_procedural_scene
from tests.helpers.runs import TINY_TRAIN

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


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The procedural scene at 16 x 16 pixels: 6 train, 2 val, 2 test views."""
    return write_procedural_scene(tmp_path_factory.mktemp("scene") / "proc", size=16, n_train=6, n_val=2, n_test=2)


@pytest.fixture(scope="session")
def trained_run(tiny_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with every stage trained on ``tiny_scene`` (shared: copy it to modify it)."""
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", str(tiny_scene), "--out", str(run), "--device", "cpu", *TINY_TRAIN]) == 0
    return run


@pytest.fixture
def one_thread():  # type: ignore[no-untyped-def]
    """One intra-op thread for the test: its tensors are tiny, and on a shared 2-core machine
    two threads made such files 5-10x slower (hand-offs while other processes hold the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def cpu_backend():  # type: ignore[no-untyped-def]
    """The compiled ``cpu`` backend; skips only where there is no C compiler. A compiler that
    fails to build or load the kernels fails the test instead: otherwise the comparisons with
    the reference would silently run the reference against itself."""
    from kilonerf.kernels.cpu import CpuFusedBackend
    from kilonerf.kernels.native import NoCompiler

    try:
        return CpuFusedBackend()
    except NoCompiler as exc:
        pytest.skip(f"native kernels unavailable: {exc}")
