"""Driving the viewer from a headless Chromium: its tests and the README's screenshot.

Uses Debian's ``chromium`` and ``chromium-driver`` packages through Selenium (the ``test``
extra) with an explicit driver path, so nothing is downloaded.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kilonerf.errors import KiloNerfError

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chromium_missing() -> str | None:
    """Why a headless browser cannot run here (None when it can)."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).is_file() and shutil.which(Path(path).name) is None:
            return f"{path} not installed (Debian: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install -e '.[test]')"
    return None


@contextmanager
def headless_chromium(width: int = 1000, height: int = 640) -> Iterator[Any]:
    """A Selenium driver of a headless Chromium window of ``width`` x ``height`` CSS pixels."""
    reason = chromium_missing()
    if reason is not None:
        raise KiloNerfError(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM if Path(CHROMIUM).is_file() else str(shutil.which("chromium"))
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}", "--force-device-scale-factor=1"):  # fmt: skip
        opts.add_argument(arg)
    driver_path = CHROMEDRIVER if Path(CHROMEDRIVER).is_file() else str(shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver: Any) -> np.ndarray:
    """(H, W, 3) uint8 of the browser's viewport."""
    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def dismiss_notifications(driver: Any) -> None:
    """Close viser's toasts (e.g. its 'software WebGL' warning in a headless browser)."""
    driver.execute_script(
        "document.querySelectorAll('.mantine-Notification-closeButton').forEach(b => b.click());"
    )


def render_area(image: np.ndarray) -> np.ndarray:
    """The part of a viewer screenshot that only the scene covers: left of the control
    panel (which takes the right third) and below viser's notifications (top left)."""
    h, w = image.shape[:2]
    return image[int(0.3 * h) : int(0.95 * h), int(0.05 * w) : int(0.62 * w)]


def foreground_fraction(image: np.ndarray, background: np.ndarray, tol: int = 24) -> float:
    """Fraction of pixels (H, W, 3) differing from ``background`` (3,) in [0, 1] by more than
    ``tol`` levels of 255 in some channel."""
    bg = np.round(np.asarray(background, dtype=np.float64) * 255.0)
    return float((np.abs(image.astype(np.float64) - bg).max(axis=-1) > tol).mean())


def wait_until(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; TimeoutError naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


def wait_for_full_frame(viewer: Any, timeout: float, after: int = 0) -> int:
    """Client id of the first tab of ``viewer`` to be sent more than ``after`` full-resolution
    frames."""
    def ready() -> tuple[int] | None:
        for key in viewer.clients():
            if viewer.loop.frames_sent(key)["full"] > after:
                return (key,)
        return None

    return wait_until(ready, timeout, f"full-resolution frame {after + 1}")[0]
