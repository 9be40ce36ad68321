"""Take docs/viewer.png: the viewer of a run in headless Chromium, with the machinery of
tests/tools/test_viewer_server.py.

    python docs/viewer_screenshot.py runs/lego100 [--out docs/viewer.png] [--box] [--grid] [--height H]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kilonerf.data.images import write_png

from kilonerf.viewer.app import ViewerOptions, open_viewer
from kilonerf.viewer.browser import (
    dismiss_notifications, foreground_fraction, headless_chromium, render_area, screenshot, wait_for_full_frame,
)  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "viewer.png")
    ap.add_argument("--box", action="store_true", help="show the scene box overlay")
    ap.add_argument("--grid", action="store_true", help="show the network grid overlay")
    ap.add_argument("--size", default="1000x700", help="browser window, WIDTHxHEIGHT")
    ap.add_argument("--height", type=int, help="full-resolution frame height (default: the viewer's)")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    viewer = open_viewer(args.run, options=ViewerOptions(height=args.height, box=args.box, grid=args.grid))
    viewer.start("127.0.0.1", 0)
    try:
        with headless_chromium(width, height) as driver:
            driver.get(viewer.url)
            wait_for_full_frame(viewer, 60)
            time.sleep(1.0)  # let the page decode and draw the frame
            dismiss_notifications(driver)
            time.sleep(0.5)
            image = screenshot(driver)
    finally:
        viewer.stop()
    fraction = foreground_fraction(render_area(image), viewer.scene.background)
    write_png(args.out, image)
    print(f"wrote {args.out} ({image.shape[1]} x {image.shape[0]}; {100 * fraction:.0f}% of the render area is scene)")


if __name__ == "__main__":
    main()
