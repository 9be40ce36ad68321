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


def compare_runs(a: Path, b: Path) -> dict[str, bool | None]:
    """File name -> whether both runs hold it bit for bit (None: not in both)."""
    out: dict[str, bool | None] = {}
    for name in ("teacher/checkpoint.pt", "student_distilled.pt", "student.pt"):
        if not ((a / name).is_file() and (b / name).is_file()):
            out[name] = None
            continue
        x, y = safe_torch_load(a / name), safe_torch_load(b / name)
        if name.startswith("teacher"):
            x, y = x["trainable"]["model"], y["trainable"]["model"]
        tx, ty = tensors(x), tensors(y)
        out[name] = tx.keys() == ty.keys() and all(torch.equal(tx[k], ty[k]) for k in tx)
    if (a / "occupancy.npz").is_file() and (b / "occupancy.npz").is_file():
        oa, ob = np.load(a / "occupancy.npz"), np.load(b / "occupancy.npz")
        out["occupancy.npz"] = all(np.array_equal(oa[k], ob[k]) for k in ("bbox", "res", "bits"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    args = ap.parse_args()
    for name, same in compare_runs(args.a, args.b).items():
        print(f"{name}: {'not in both runs' if same is None else 'bit-identical' if same else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
