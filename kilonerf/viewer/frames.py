"""Rendering one viewer frame with the run's models (student or teacher)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kilonerf.data.images import to_uint8
from kilonerf.data.scene import Scene
from kilonerf.render.volume import RenderFn
from kilonerf.errors import RunError
from kilonerf.names import MODELS
from kilonerf.run.models import load_renderer, load_student_renderer
from kilonerf.render.student import StudentRenderer
from kilonerf.run.folder import RunDir
from kilonerf.viewer.camera import ViewCamera


@dataclass(frozen=True)
class RenderSettings:
    """What a browser tab asked for (its GUI controls)."""

    model: str = "student"
    height: int = 200
    """Height in pixels of the full-resolution frame (width follows the tab's aspect)."""
    ert_threshold: float = 0.01
    """Early ray termination at this transmittance (0 disables it); student only."""
    skip_empty: bool = True
    """Empty-space skipping with the occupancy grid; student only."""
    samples_per_pass: int = 32
    """Candidates each ray takes per evaluation pass; student only. The paper's GPU renderer
    uses 8; on a CPU each pass costs a fixed overhead, and 32 renders a small frame several
    times faster (docs/benchmarks.md) for a few more samples evaluated past termination."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    """(H, W, 3) uint8."""
    seconds: float
    """Render time (rays to colours), encoding and sending excluded."""
    samples_per_ray: float | None
    """Samples the network evaluated per ray (None for the teacher)."""
    full: bool
    """True for the full-resolution frame, False for a reduced-resolution preview."""
    model: str


class Cancelled(Exception):
    """A render was abandoned because its view changed before it finished."""


class FrameRenderer:
    """Renders frames of a run's scene; models are loaded on first use and kept.

    Frames are rendered in bands of ``band_rays`` rays so that a long (full-resolution)
    render can be abandoned between bands when the camera moves again.
    """

    def __init__(self, run: RunDir, scene: Scene, device: torch.device, band_rays: int = 1 << 14) -> None:
        self.run, self.scene, self.device, self.band_rays = run, scene, device, band_rays
        self._student: StudentRenderer | None = None
        self._teacher: RenderFn | None = None

    def student(self) -> StudentRenderer:
        if self._student is None:
            self._student = load_student_renderer(self.run, self.scene, self.device)
        return self._student

    def teacher(self) -> RenderFn:
        if self._teacher is None:
            self._teacher = load_renderer(self.run, "teacher", self.scene, self.device)
        return self._teacher

    @torch.no_grad()
    def render(
        self, camera: ViewCamera, settings: RenderSettings, height: int, full: bool,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Frame:  # fmt: skip
        """A ``height``-pixel-tall frame of ``camera``; raises :class:`Cancelled` when
        ``cancelled()`` turns true between bands, and KiloNerfError for a missing model."""
        h, w = camera.size(height)
        render_band = self._band_fn(settings)
        t0 = time.perf_counter()
        origins, dirs = camera.rays(h, self.device)
        rgb, samples = [], 0
        for lo in range(0, origins.shape[0], self.band_rays):
            if cancelled():
                raise Cancelled
            colour, evaluated = render_band(origins[lo : lo + self.band_rays], dirs[lo : lo + self.band_rays])
            rgb.append(colour)
            samples = samples + evaluated if samples is not None and evaluated is not None else None
        image = to_uint8(torch.cat(rgb).float().reshape(h, w, 3).cpu().numpy())
        seconds = time.perf_counter() - t0
        per_ray = samples / (h * w) if samples is not None else None
        return Frame(image=image, seconds=seconds, samples_per_ray=per_ray, full=full, model=settings.model)

    def _band_fn(self, settings: RenderSettings) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, int | None]]:
        """rays (N, 3), (N, 3) -> rgb (N, 3) and samples evaluated (None if not counted)."""
        if settings.model == "teacher":
            teacher = self.teacher()
            return lambda o, d: (teacher(o, d), None)
        if settings.model == "student":
            student = self.student()
            return lambda o, d: student.render_with_stats(
                o, d, settings.ert_threshold, settings.skip_empty, settings.samples_per_pass
            )
        raise RunError(f"unknown model '{settings.model}' (have: {', '.join(MODELS)})")
