"""Whether two run folders hold the same trained models, tensor for tensor.

    python benchmarks/compare_runs.py RUN_A RUN_B

Compares the teacher checkpoint's model, ``occupancy.npz``, ``student_distilled.pt`` and
``student.pt`` (those present in both); a refactor that changes no computation must print
"bit-identical" for each.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kilonerf.io import safe_torch_load


def tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        return {k2: v2 for k, v in obj.items() for k2, v2 in tensors(v, f"{prefix}/{k}").items()}
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    for name in ("teacher/checkpoint.pt", "student_distilled.pt", "student.pt"):
        if not ((args.a / name).is_file() and (args.b / name).is_file()):
            print(f"{name}: not in both runs")
            continue
        x, y = safe_torch_load(args.a / name), safe_torch_load(args.b / name)
        if name.startswith("teacher"):
            x, y = x["trainable"]["model"], y["trainable"]["model"]
        tx, ty = tensors(x), tensors(y)
        same = tx.keys() == ty.keys() and all(torch.equal(tx[k], ty[k]) for k in tx)
        print(f"{name}: {'bit-identical' if same else 'DIFFERENT'} ({len(tx)} tensors)")
    if (args.a / "occupancy.npz").is_file() and (args.b / "occupancy.npz").is_file():
        oa, ob = np.load(args.a / "occupancy.npz"), np.load(args.b / "occupancy.npz")
        same = all(np.array_equal(oa[k], ob[k]) for k in ("bbox", "res", "bits"))
        print(f"occupancy.npz: {'bit-identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
