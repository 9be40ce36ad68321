"""Viewer interactivity on a run: frame rate while the camera moves, delay to the full frame.

    python benchmarks/viewer.py runs/lego100 [--seconds 8] [--stops 5] [--threads 2] [--json F]

Drives the viewer's own render loop (:class:`kilonerf.viewer.render_loop.RenderLoop` with
the run's renderer and the viewer's defaults) with a camera orbiting the scene at 45 degrees
per second, updated at 60 Hz as a dragging browser does, at a 16:9 aspect. Every delivered
frame is JPEG-encoded as the web server does before sending (the browser and network are not
included). Reports:

- moving: frames per second delivered while the camera moves (the first second, while the
  preview resolution adapts, excluded), their mean height and render time;
- stops: ``--stops`` times the camera moves for a second and stops; the time from its last
  update to the delivered full-resolution frame.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from kilonerf.io import atomic_write_json
from kilonerf.viewer.app import ViewerOptions, open_viewer
from kilonerf.viewer.camera import ViewCamera, home_view, orbit
from kilonerf.viewer.frames import Frame


class Recorder:
    """The deliver callback: encodes like the server and logs (time, full, height, seconds)."""

    def __init__(self, quality: tuple[int, int]) -> None:
        self.quality, self.log, self.lock = quality, [], threading.Lock()
        self.full_event = threading.Event()

    def __call__(self, frame: Frame) -> None:
        buf = io.BytesIO()
        iio.imwrite(buf, frame.image, extension=".jpeg", quality=self.quality[1 if frame.full else 0])
        with self.lock:
            self.log.append((time.perf_counter(), frame.full, frame.image.shape[0], frame.seconds))
        if frame.full:
            self.full_event.set()


def move(loop, key: int, scene, fov: float, aspect: float, seconds: float, start_angle: float) -> float:
    """Orbit for ``seconds`` at 45 deg/s with 60 Hz updates; returns the final angle."""
    t0 = time.perf_counter()
    angle = start_angle
    while (now := time.perf_counter()) - t0 < seconds:
        angle = start_angle + math.radians(45.0) * (now - t0)
        c2w, _ = orbit(scene, angle)
        loop.update(key, ViewCamera(c2w=c2w, fov_y=fov, aspect=aspect))
        time.sleep(1.0 / 60.0)
    return angle


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("--seconds", type=float, default=8.0, help="length of the moving phase")
    ap.add_argument("--stops", type=int, default=5)
    ap.add_argument("--aspect", type=float, default=16 / 9)
    ap.add_argument("--height", type=int, help="full-resolution height (default: the viewer's)")
    ap.add_argument("--samples-per-pass", type=int, help="the fast renderer's (default: the viewer's)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    options = ViewerOptions(height=args.height)
    viewer = open_viewer(args.run, device="cpu", options=options)
    viewer.frames.student()
    loop, scene = viewer.loop, viewer.scene
    _, _, fov = home_view(scene)
    settings = viewer.initial
    if args.samples_per_pass:
        settings = replace(settings, samples_per_pass=args.samples_per_pass)
    rec = Recorder(options.jpeg_quality)
    loop.attach(0, rec, lambda msg: print("error:", msg), settings)
    loop.start()
    try:
        # Warm-up: one full frame (first-call costs), then the moving phase.
        c2w, _ = orbit(scene, 0.0)
        loop.update(0, ViewCamera(c2w=c2w, fov_y=fov, aspect=args.aspect))
        rec.full_event.wait(30)
        t_move = time.perf_counter()
        angle = move(loop, 0, scene, fov, args.aspect, args.seconds, 0.0)
        t_end = time.perf_counter()
        with rec.lock:
            # Every frame counts: once renders are fast enough, moving frames are full-size.
            moving = [r for r in rec.log if t_move + 1.0 <= r[0] <= t_end]
        fps = len(moving) / (t_end - t_move - 1.0)
        delays = []
        for _ in range(args.stops):
            rec.full_event.wait(5)  # the previous full frame, if still pending
            angle = move(loop, 0, scene, fov, args.aspect, 1.0, angle)
            t_stop = time.perf_counter()  # just after the last camera update
            delay = float("inf")
            while time.perf_counter() - t_stop < 10.0 and delay == float("inf"):
                with rec.lock:  # a full frame whose render started after the last update
                    done = [r[0] for r in rec.log if r[1] and r[0] - r[3] >= t_stop - 1.0 / 60.0]
                if done:
                    delay = max(0.0, min(done) - t_stop)
                else:
                    time.sleep(0.005)
            delays.append(delay)
    finally:
        loop.stop()
    full_h = viewer.initial.height
    result = {
        "run": args.run, "threads": torch.get_num_threads(), "aspect": args.aspect,
        "samples_per_pass": settings.samples_per_pass, "load_average": os.getloadavg(),
        "full_size": [full_h, round(full_h * args.aspect)],
        "moving_fps": fps,
        "moving_height_mean": float(np.mean([r[2] for r in moving])) if moving else None,
        "moving_render_ms_mean": 1000 * float(np.mean([r[3] for r in moving])) if moving else None,
        "full_frame_delay_s": delays,
        "full_frame_delay_s_max": max(delays) if delays else None,
    }  # fmt: skip
    for k, v in result.items():
        print(f"{k}: {v}")
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
