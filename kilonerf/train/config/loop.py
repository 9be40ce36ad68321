"""The training loop's settings (every stage's loop: steps, budget, validation, checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass

from kilonerf.settings import Settings, setting


@dataclass(frozen=True)
class LoopConfig(Settings):
    SECTION = "loop"

    max_steps: int = setting(kind=int, ge=1)
    """Stop once this many optimisation steps are done (counting resumed ones)."""
    max_seconds: float | None = setting(None, kind=float, gt=0, optional=True)
    """Wall-clock budget for the stage (validation and checkpoints included, resumes summed)."""
    val_every: int = setting(0, ge=0)
    """Validate every this many steps (0: only at the end)."""
    val_views: int = setting(0, ge=0)
    """Validation images rendered each time, spread evenly over the split; 0: no validation."""
    ckpt_every: int = setting(1000, ge=1)
    log_every: int = setting(100, ge=1)
    """Steps between history records; the loss is read back (a device sync) only then."""
    seed: int = setting(0, ge=0)
    precrop_steps: int = setting(0, ge=0)
    """During the first steps draw rays only from each image's central crop (NeRF's precrop)."""
    precrop_frac: float = setting(0.5, gt=0, le=1)
    progress: bool = setting(True)
    """Show a tqdm bar on stderr."""
