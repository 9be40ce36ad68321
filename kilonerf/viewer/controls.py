"""One tab's GUI panel: render controls, overlay toggles and the live readout."""

from __future__ import annotations

from dataclasses import dataclass

import viser

from kilonerf.viewer.frames import Frame, RenderSettings

MIN_HEIGHT, MAX_HEIGHT = 16, 1080
"""Range of the resolution slider (and of ``kilonerf view --height``)."""


@dataclass
class Controls:
    model: viser.GuiDropdownHandle
    height: viser.GuiSliderHandle
    ert_threshold: viser.GuiSliderHandle
    skip_empty: viser.GuiCheckboxHandle
    samples_per_pass: viser.GuiSliderHandle
    cameras: viser.GuiCheckboxHandle
    box: viser.GuiCheckboxHandle
    grid: viser.GuiCheckboxHandle
    readout: viser.GuiMarkdownHandle
    points: viser.GuiCheckboxHandle | None = None
    """Shown only for scenes with sparse points (made by ``kilonerf process``)."""

    def settings(self) -> RenderSettings:
        return RenderSettings(
            model=str(self.model.value), height=int(self.height.value),
            ert_threshold=float(self.ert_threshold.value), skip_empty=bool(self.skip_empty.value),
            samples_per_pass=int(self.samples_per_pass.value),
        )  # fmt: skip

    def sync_enabled(self) -> None:
        """The fast renderer's switches apply to the student only."""
        teacher = self.model.value == "teacher"
        for handle in (self.ert_threshold, self.skip_empty, self.samples_per_pass):
            handle.disabled = teacher


def add_controls(
    gui: viser.GuiApi, models: list[str], settings: RenderSettings, cameras: bool, box: bool, grid: bool,
    points: bool | None = None,
) -> Controls:
    """Add the panel to one tab's GUI, starting from ``settings`` and the overlay flags
    (``points`` None: the scene has no sparse points, no checkbox)."""
    with gui.add_folder("Render"):
        model = gui.add_dropdown("model", models, initial_value=settings.model)
        height = gui.add_slider("resolution (px)", MIN_HEIGHT, MAX_HEIGHT, 8, settings.height,
                                hint="height of the full-resolution frame; moving renders fewer pixels")  # fmt: skip
        ert = gui.add_slider("early termination", 0.0, 0.2, 0.005, settings.ert_threshold,
                             hint="a ray stops once its transmittance is at most this (0: never)")  # fmt: skip
        skip = gui.add_checkbox("empty-space skipping", settings.skip_empty)
        per_pass = gui.add_slider("samples per pass", 4, 64, 4, settings.samples_per_pass,
                                  hint="candidates each ray evaluates per pass (the paper: 8)")  # fmt: skip
    with gui.add_folder("Overlays"):
        cams = gui.add_checkbox("training cameras", cameras)
        box_box = gui.add_checkbox("scene box", box)
        grid_box = gui.add_checkbox("network grid", grid, disabled="student" not in models)
        points_box = gui.add_checkbox("sparse points", points) if points is not None else None
    readout = gui.add_markdown("waiting for the first frame")
    controls = Controls(model, height, ert, skip, per_pass, cams, box_box, grid_box, readout, points_box)
    controls.sync_enabled()
    return controls


def readout_text(frame: Frame) -> str:
    """One line for the tab: time per frame, frame size and kind, samples per ray."""
    h, w = frame.image.shape[:2]
    kind = "full" if frame.full else "moving"
    spr = f"{frame.samples_per_ray:.1f} samples/ray" if frame.samples_per_ray is not None else "samples/ray: n/a"
    return f"**{1000.0 * frame.seconds:.0f} ms**/frame, {w}x{h} ({kind}, {frame.model}), {spr}"
