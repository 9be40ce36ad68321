"""Stage what ``benchmarks/gpu_check.py`` needs on a bare GPU machine (no network) into
``runs/gpu_carry/`` (git-ignored, as all of ``runs/``), to be carried there with the checkout.

    python benchmarks/fetch_gpu_wheels.py [--data ../shared/data/lego_200] [--with NAME==VERSION ...] [--all-missing]

- ``runs/gpu_carry/data/<scene>``: a copy of the scene the check trains on (lego_200: 7.5 MB).
- ``runs/gpu_carry/wheels/``: wheels (CPython 3.12, manylinux x86-64, no dependencies: name
  each) of the project's dependencies that the GPU machine's image lacks. The image has
  :data:`IMAGE_PACKAGES` (PyTorch 2.11 with CUDA, Triton 3.6, ...); ``gpu_check`` imports
  nothing else, so by default no wheel is needed and none is fetched. ``--with`` adds
  packages by name; ``--all-missing`` fetches every dependency of pyproject.toml that the
  image lacks (the viewer's, capture's and video's: only for running those commands there).

Prints what it staged and the total size against the 64 MiB the device tool carries. The
wheels are never committed. How the check is then run: README.md, section GPU.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CARRY = ROOT / "runs" / "gpu_carry"
CARRY_LIMIT_MB = 64
IMAGE_PACKAGES = frozenset({
    "torch", "triton", "numpy", "pillow", "imageio", "tqdm", "scikit-image", "matplotlib", "pytest", "hypothesis",
    "opencv-python-headless", "scipy", "rich", "pyyaml", "packaging", "typing-extensions",
})  # fmt: skip
"""Packages of the GPU machines' image that kilonerf uses (the device notes list them all)."""
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")  # fmt: skip


def missing_dependencies(with_test: bool = True) -> list[str]:
    """pyproject.toml's requirements (and its ``test`` extra's) whose package the image lacks."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + (list(project["optional-dependencies"]["test"]) if with_test else [])
    names = [re.split(r"[<>=!~ \[;]", r, maxsplit=1)[0].strip().lower() for r in reqs]
    return [n for n in names if n not in IMAGE_PACKAGES]


def download(requirements: list[str], dest: Path) -> None:
    """``pip download`` of each requirement for the GPU machine's Python, no dependencies."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(dest)]  # fmt: skip
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + requirements, check=True)


def size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "lego_200"), help="scene folder to copy")
    ap.add_argument("--with", dest="extra", action="append", default=[], metavar="NAME[==VERSION]",
                    help="also fetch this wheel (repeat; no dependencies are fetched: name each)")
    ap.add_argument("--all-missing", action="store_true", help="every pyproject dependency the image lacks")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        sys.exit(f"fetch_gpu_wheels: {data}: no such scene folder (--data)")
    dest = CARRY / "data" / data.name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(data, dest)
    print(f"data: {dest.relative_to(ROOT)} ({size_mb(dest):.1f} MB)")
    wanted = list(args.extra) + (missing_dependencies() if args.all_missing else [])
    if wanted:
        download(wanted, CARRY / "wheels")
    else:
        print(f"wheels: none needed by gpu_check (the image has {', '.join(sorted(IMAGE_PACKAGES))}); "
              f"missing from it and not needed there: {', '.join(missing_dependencies())}")  # fmt: skip
    total = size_mb(CARRY)
    print(f"runs/gpu_carry: {total:.1f} MB of the {CARRY_LIMIT_MB} MiB carried with the checkout")
    if total > CARRY_LIMIT_MB * 0.9:
        print("warning: with the checkout this may exceed what the device tool carries", file=sys.stderr)


if __name__ == "__main__":
    main()
