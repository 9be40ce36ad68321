"""The render thread: reduced resolution while a camera moves, full resolution once it stops.

One worker thread renders for every connected tab in turn (torch already spreads one
render over all cores; two concurrent renders would only fight over them). Tabs report
camera and settings changes from the web server's threads through :meth:`RenderLoop.update`,
which only records the change and wakes the worker, so the server never waits on a render.

Per tab the worker keeps a version counter, bumped by every change, and what it last sent:
- the view changed less than ``settle_s`` ago: render a preview at the
  :class:`PreviewSizer`'s height (fast; previews are never abandoned);
- the view has been still for ``settle_s`` and its last frame was a preview (or stale):
  render at full resolution, abandoning the render between bands if the view changes again.
Previews come before full frames, and tabs waiting for the same kind of frame are served
least recently served first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

from kilonerf.errors import KiloNerfError
from kilonerf.viewer.adaptive import PreviewSizer
from kilonerf.viewer.camera import ViewCamera
from kilonerf.viewer.frames import Cancelled, Frame, RenderSettings

log = logging.getLogger(__name__)

Deliver = Callable[[Frame], None]
"""Sends a finished frame to its tab (called on the render thread)."""
Report = Callable[[str], None]
"""Shows an error message in its tab (called on the render thread)."""


class FrameSource(Protocol):
    def render(
        self, camera: ViewCamera, settings: RenderSettings, height: int, full: bool, cancelled: Callable[[], bool]
    ) -> Frame: ...


@dataclass
class _Tab:
    deliver: Deliver
    report: Report
    settings: RenderSettings
    camera: ViewCamera | None = None
    version: int = 0
    changed_at: float = 0.0
    sent_version: int = -1
    sent_full: bool = False
    served_at: float = 0.0
    failed_version: int = -1
    """Version whose render raised an error: not retried until the view changes."""
    frames: dict[str, int] = field(default_factory=lambda: {"preview": 0, "full": 0})


class RenderLoop:
    """Schedules renders for any number of tabs on one worker thread (see the module docstring)."""

    def __init__(self, source: FrameSource, sizer: PreviewSizer | None = None, settle_s: float = 0.15) -> None:
        self.source, self.sizer, self.settle_s = source, sizer or PreviewSizer(), settle_s
        self._tabs: dict[int, _Tab] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="kilonerf-viewer-render", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to finish (a full-resolution render is abandoned) and wait for it."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def attach(self, key: int, deliver: Deliver, report: Report, settings: RenderSettings) -> None:
        with self._cond:
            self._tabs[key] = _Tab(deliver=deliver, report=report, settings=settings)

    def detach(self, key: int) -> None:
        with self._cond:
            self._tabs.pop(key, None)
            self._cond.notify_all()

    def tabs(self) -> list[int]:
        with self._cond:
            return list(self._tabs)

    def frames_sent(self, key: int) -> dict[str, int]:
        """Counts of ``preview`` and ``full`` frames delivered to tab ``key`` (zeros if unknown)."""
        with self._cond:
            tab = self._tabs.get(key)
            return dict(tab.frames) if tab is not None else {"preview": 0, "full": 0}

    def update(self, key: int, camera: ViewCamera | None = None, **settings: object) -> None:
        """Record a new camera and/or changed settings (``RenderSettings`` field names) of a tab."""
        with self._cond:
            tab = self._tabs.get(key)
            if tab is None:
                return
            if camera is not None:
                tab.camera = camera
            if settings:
                tab.settings = replace(tab.settings, **settings)  # type: ignore[arg-type]
            tab.version += 1
            tab.changed_at = time.monotonic()
            self._cond.notify_all()

    def _pick(self, now: float) -> tuple[int, _Tab, bool, float | None]:
        """(key, tab, full) of the next render, key -1 if none; and the next time one falls due."""
        previews, fulls, due = [], [], None
        for key, tab in self._tabs.items():
            if tab.camera is None or tab.failed_version == tab.version:
                continue
            still_for = now - tab.changed_at
            if still_for < self.settle_s:
                if tab.sent_version != tab.version:
                    previews.append((tab.served_at, key))
                due = min(due, tab.changed_at + self.settle_s) if due is not None else tab.changed_at + self.settle_s
            elif tab.sent_version != tab.version or not tab.sent_full:
                fulls.append((tab.served_at, key))
        for queue, full in ((previews, False), (fulls, True)):
            if queue:
                key = min(queue)[1]
                return key, self._tabs[key], full, due
        return -1, None, False, due  # type: ignore[return-value]

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                key, tab, full, due = self._pick(time.monotonic())
                if key < 0:
                    self._cond.wait(None if due is None else max(0.0, due - time.monotonic()) + 1e-3)
                    continue
                camera, settings, version = tab.camera, tab.settings, tab.version
                tab.served_at = time.monotonic()
            assert camera is not None
            self._render(key, tab, camera, settings, version, full)

    def _render(self, key: int, tab: _Tab, camera: ViewCamera, settings: RenderSettings, version: int, full: bool) -> None:
        height = settings.height if full else self.sizer.height(settings.model, settings.height)
        # A preview as tall as the full frame is the full frame; it stays uncancellable like
        # any preview, or a camera moving faster than one render would starve the tab.
        cancellable = full
        full = full or height >= settings.height

        def cancelled() -> bool:
            return self._stop or (cancellable and tab.version != version)

        try:
            frame = self.source.render(camera, settings, height, full, cancelled)
        except Cancelled:
            return
        except KiloNerfError as exc:
            with self._cond:
                tab.failed_version = version
            self._call(tab.report, str(exc))
            return
        except Exception as exc:  # a render bug must not kill the thread serving every tab
            log.exception("viewer: render failed")
            with self._cond:
                tab.failed_version = version
            self._call(tab.report, f"render failed: {type(exc).__name__}: {exc}")
            return
        if not full:
            self.sizer.record(settings.model, height, frame.seconds)
        with self._cond:
            if self._tabs.get(key) is not tab:
                return  # the tab closed while rendering
            tab.sent_version, tab.sent_full = version, full
            tab.frames["full" if full else "preview"] += 1
        self._call(tab.deliver, frame)

    @staticmethod
    def _call(fn: Callable[[object], None], arg: object) -> None:
        try:
            fn(arg)
        except Exception:  # e.g. the tab disconnected while its frame was being sent
            log.debug("viewer: delivering to a tab failed", exc_info=True)
