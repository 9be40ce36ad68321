"""The Triton kernels compile for a Hopper GPU (sm_90) without one: the interpreter tests do
not check what only the GPU compiler rejects (``tl.dot`` sizes under 16, layouts), this does.

Compiled in a subprocess without ``TRITON_INTERPRET`` (the interpreter tests set it in this
process), through ``triton.compile`` with an explicit target, down to PTX and a cubin.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec("triton") is None:  # not imported here: see tests/conftest.py
    pytest.skip("triton is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import re
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from kilonerf.kernels.triton_mlp import _tiny_mlp_kernel
from kilonerf.kernels.triton_render import _composite_kernel, _march_kernel

TYPES = {"order_ptr": "*i64", "tile_net_ptr": "*i32", "tile_start_ptr": "*i64", "tile_end_ptr": "*i64",
         "dir_index_ptr": "*i64", "active_ptr": "*i64", "k_next_ptr": "*i64", "k_end_ptr": "*i64", "done_ptr": "*i8",
         "occ_bits_ptr": "*u8", "slot_net_ptr": "*i32", "count_ptr": "*i64", "n_active": "i32", "num_nets": "i32",
         "orx": "i32", "ory": "i32", "orz": "i32", "grx": "i32", "gry": "i32", "grz": "i32"}


def build(kernel, const, **options):
    sig = {a: "constexpr" if a in const else TYPES.get(a, "*fp32" if a.endswith("_ptr") else "fp32")
           for a in kernel.arg_names}
    compiled = triton.compile(ASTSource(kernel, sig, const), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": 4, **options})
    mma = len(re.findall(r"\bw?gmma|\bmma\.", compiled.asm["ptx"]))
    print(kernel.__name__, mma, len(compiled.asm["cubin"]))


mlp = dict(H=32, LP=10, LD=4, CP=64, CD=32, BM=64, HAS_DIR_INDEX=True)
build(_tiny_mlp_kernel, dict(mlp, WITH_RGB=True, PRECISION="fp16"))
build(_tiny_mlp_kernel, dict(mlp, WITH_RGB=False, PRECISION="tf32"))
build(_march_kernel, dict(S=8, BLOCK=64, USE_OCC=True, CHECK_GRID=True, COUNT_ONLY=False), enable_fp_fusion=False)
build(_composite_kernel, dict(S=8, BLOCK=64, LEAKY=False, MAX_TAU=30.0))
"""


@pytest.mark.slow  # four compilations, ~10 s
def test_kernels_compile_for_sm90() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("with a GPU the other Triton tests compile and run the kernels themselves")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences Triton 3.9's notice; fusion is its default
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and "ptxas" in proc.stderr and "not found" in proc.stderr.lower():
        pytest.skip("Triton's NVIDIA toolchain (ptxas) is not installed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    assert [r[0] for r in rows] == ["_tiny_mlp_kernel"] * 2 + ["_march_kernel", "_composite_kernel"], proc.stdout
    for name, mma, cubin in rows:
        assert int(cubin) > 0
        if name == "_tiny_mlp_kernel":
            assert int(mma) > 0, "no tensor-core instructions in the tiny-MLP kernel's PTX"
