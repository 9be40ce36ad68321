"""Saving and loading the student (grid of tiny MLPs) as a standalone weights file."""

from __future__ import annotations

from pathlib import Path

import torch

from kilonerf.errors import RunError
from kilonerf.fields.multinet import MultiNetField
from kilonerf.io import atomic_torch_save, safe_torch_load

STUDENT_FORMAT = "kilonerf-student-1"


def save_student(path: str | Path, student: MultiNetField) -> None:
    """Atomic write of the student's constructor config and weights (weights_only-loadable)."""
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    atomic_torch_save(path, {"format": STUDENT_FORMAT, "config": student.config(), "state": state})


def load_student(path: str | Path, device: torch.device | str = "cpu") -> MultiNetField:
    """A :class:`MultiNetField` rebuilt from ``path`` (no code is unpickled)."""
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != STUDENT_FORMAT:
        raise RunError(f"{path}: not a {STUDENT_FORMAT} file")
    try:
        cfg = dict(ckpt["config"])
        cfg.pop("density_activation", None)  # files written while the model carried its activation
        student = MultiNetField(bbox=torch.tensor(cfg.pop("bbox")), res=tuple(cfg.pop("res")), **cfg)
        student.load_state_dict(ckpt["state"])
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise RunError(f"{path}: cannot rebuild the student ({type(exc).__name__}: {exc})") from exc
    return student.to(device)
