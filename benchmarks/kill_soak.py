"""Kill -9 soak: SIGKILL `kilonerf train` at random moments of every stage, resume with the same
command each time, and compare the final student with an uninterrupted run.

    python benchmarks/kill_soak.py ../shared/data/lego_100 --out runs/soak [--kills 20] [--seed 0]
        [--reference runs/soak_reference] [--json F]

The reference run is trained first (same command, never killed) unless it exists. Kills are
spread over the four stages in proportion to their time (at least 3 each); every 4th waits for
a checkpoint's temp file to appear and kills during the write. After each kill the script
records the stage, the work lost (the steps its progress bar showed past the checkpoint on
disk, times the reference's wall seconds per step; for occupancy, which has no checkpoint,
the seconds into the stage) against one checkpoint interval (``ckpt_every`` steps; the whole
stage for occupancy), the seconds from launch until the stage resumed, the temp files left behind, and whether every checkpoint in the run still loads.
At the end: runs that resumed, the final student against the reference's (bit for bit, and
val PSNR). Numbers depend on the machine: quote them with it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from compare_runs import compare_runs  # benchmarks/ is on the path when this script runs

from kilonerf.data.load import load_scene
from kilonerf.evaluation import evaluate_split
from kilonerf.io import atomic_write_json, read_json, safe_torch_load
from kilonerf.kernels.perf import machine_name
from kilonerf.run.models import load_renderer
from kilonerf.occupancy.grid import OccupancyGrid
from kilonerf.names import STAGES
from kilonerf.run.folder import RunDir

STAGE_LINE = re.compile(r"^\[(teacher|occupancy|distill|finetune)\] running")
PROGRESS = re.compile(r"(teacher|distill|finetune) (\d+)/(\d+)")
"""A tqdm bar's text on stderr: the stage and the steps done."""
TEMP_NAME = re.compile(r"^\..+\.tmp")
LAUNCH = [sys.executable, "-c", "import sys; from kilonerf.cli import main; sys.exit(main())", "train"]


@dataclass
class Process:
    """One `kilonerf train` process and the stages it announced (stage, monotonic time)."""

    popen: subprocess.Popen
    started: float
    stages: list[tuple[str, float]] = field(default_factory=list)
    steps: dict[str, int] = field(default_factory=dict)
    """The last step count each stage's progress bar showed."""

    def current(self) -> tuple[str, float] | None:
        return self.stages[-1] if self.stages else None


def launch(data: str, out: Path) -> Process:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    popen = subprocess.Popen([*LAUNCH, data, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env)  # fmt: skip
    proc = Process(popen, time.monotonic())

    def follow() -> None:
        assert popen.stdout is not None
        for line in popen.stdout:
            m = STAGE_LINE.match(line)
            if m:
                proc.stages.append((m.group(1), time.monotonic()))

    def follow_bars() -> None:
        assert popen.stderr is not None
        tail = ""
        while chunk := popen.stderr.read(256):
            tail = (tail + chunk)[-512:]
            for m in PROGRESS.finditer(tail):
                proc.steps[m.group(1)] = int(m.group(2))

    threading.Thread(target=follow, daemon=True).start()
    threading.Thread(target=follow_bars, daemon=True).start()
    return proc


def temp_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*") if TEMP_NAME.match(p.name))


def checkpoint_step(run: RunDir, stage: str) -> int:
    """Steps the stage's checkpoint on disk holds (0: none yet)."""
    path = run.stage_checkpoint(stage)
    return int(safe_torch_load(path)["step"]) if path.is_file() else 0


def checkpoints_load(run: RunDir) -> list[str]:
    """Problems loading the run's checkpoints and outputs that exist (empty: all load)."""
    problems = []
    for path in [run.stage_checkpoint(s) for s in ("teacher", "distill", "finetune")] + [run.distilled_path,
                                                                                        run.student_path]:  # fmt: skip
        if path.is_file():
            try:
                safe_torch_load(path)
            except Exception as exc:  # noqa: BLE001 - recorded, the soak goes on
                problems.append(f"{path.name}: {exc}")
    if run.occupancy_path.is_file():
        try:
            OccupancyGrid.load(run.occupancy_path)
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{run.occupancy_path.name}: {exc}")
    return problems


def plan_kills(n: int, seconds: dict[str, float], rng: random.Random) -> list[str]:
    """Target stage of each kill, in stage order: at least 3 per stage, the rest by stage time."""
    counts = {s: 3 for s in STAGES}
    total = sum(seconds.values())
    extra = n - 3 * len(STAGES)
    for _ in range(max(0, extra)):
        counts[rng.choices(STAGES, weights=[seconds[s] / total for s in STAGES])[0]] += 1
    return [s for s in STAGES for _ in range(counts[s])]


def wait_for_stage(proc: Process, stage: str, timeout: float) -> bool:
    """Until the process announces ``stage`` or a later one (False: it ended or timed out)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.popen.poll() is None:
        cur = proc.current()
        if cur and STAGES.index(cur[0]) >= STAGES.index(stage):
            return True
        time.sleep(0.05)
    return False


def kill_during_write(proc: Process, run: RunDir, stage: str, timeout: float) -> bool:
    """SIGKILL as soon as a temp file appears in the stage's checkpoint folder."""
    folder = run.stage_checkpoint(stage).parent
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.popen.poll() is None:
        if folder.is_dir() and any(TEMP_NAME.match(e.name) for e in os.scandir(folder)):
            proc.popen.send_signal(signal.SIGKILL)
            return True
        time.sleep(0.001)
    return False


def train_reference(data: str, out: Path) -> None:
    proc = launch(data, out)
    if proc.popen.wait() != 0:
        raise SystemExit(f"reference run failed (exit {proc.popen.returncode})")


def student_psnr(run: RunDir, data: str, split: str) -> float:
    scene = load_scene(data)
    render = load_renderer(run, "student", scene, torch.device("cpu"))
    return float(evaluate_split(render, scene, split, None, "cpu", progress=False)["psnr"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--out", required=True, help="the killed run (must not exist)")
    ap.add_argument("--reference", help="an uninterrupted run of the same data (default: OUT_reference, trained if absent)")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="val")
    ap.add_argument("--json")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"{out} exists; the soak starts from an empty run")
    ref = RunDir(Path(args.reference or f"{args.out}_reference"))
    if not ref.student_path.is_file():
        print(f"training the uninterrupted reference run into {ref.root}", flush=True)
        train_reference(args.data, ref.root)
    ref_stages = read_json(ref.stages_path)
    cfg = ref.read_meta()["config"]
    seconds = {s: float(ref_stages[s]["seconds"]) for s in STAGES}
    seconds_per_step = {s: float(ref_stages[s]["wall"]) / int(ref_stages[s]["steps"]) for s in ("teacher", "distill", "finetune")}
    interval = {s: seconds_per_step[s] * int(cfg[f"{s}_loop"]["ckpt_every"]) for s in seconds_per_step}
    interval["occupancy"] = seconds["occupancy"]

    run = RunDir(out)
    targets = plan_kills(args.kills, seconds, rng)
    kills: list[dict[str, Any]] = []
    launches = 0
    t_start = time.monotonic()
    for k, target in enumerate(targets):
        proc = launch(args.data, out)
        launches += 1
        if not wait_for_stage(proc, target, timeout=3600):
            proc.popen.wait()
            break  # finished before this kill: the remaining targets are past
        stage_seen, stage_t0 = proc.current()  # type: ignore[misc]
        resume_s = stage_t0 - proc.started
        during_write = k % 4 == 3 and stage_seen != "occupancy"
        if during_write:
            hit = kill_during_write(proc, run, stage_seen, timeout=2 * interval[stage_seen])
        else:
            hit = False
        if not hit:
            cap = interval[stage_seen] * 1.5 if stage_seen != "occupancy" else max(1.0, seconds["occupancy"] * 0.8)
            time.sleep(rng.uniform(0.5, cap))
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGKILL)
        proc.popen.wait()
        t_kill = time.monotonic()
        if proc.popen.returncode != -signal.SIGKILL:
            kills.append({"target": target, "stage": stage_seen, "killed": False, "exit": proc.popen.returncode})
            continue
        landed, landed_t0 = proc.current()  # type: ignore[misc]
        since_stage = t_kill - landed_t0
        if landed == "occupancy":  # no checkpoint inside: the whole stage so far is lost
            lost_steps, lost = None, since_stage
        else:
            # Steps the bar showed past the checkpoint on disk are lost; a resume redoes them.
            lost_steps = max(0, proc.steps.get(landed, 0) - checkpoint_step(run, landed))
            lost = lost_steps * seconds_per_step[landed]
        record = {
            "target": target, "stage": landed, "killed": True, "during_write": hit, "resume_seconds": round(resume_s, 2),
            "seconds_into_stage": round(since_stage, 2), "lost_steps": lost_steps, "lost_seconds": round(lost, 2),
            "interval_seconds": round(interval[landed], 2), "within_interval": lost <= interval[landed] + 1e-6,
            "temp_files": temp_files(out), "load_problems": checkpoints_load(run),
        }  # fmt: skip
        kills.append(record)
        steps_text = f"{lost_steps} steps = " if lost_steps is not None else ""
        print(f"kill {len(kills):2d}: {landed:<9} {since_stage:6.1f} s into the stage, lost {steps_text}{lost:5.1f} s "
              f"(interval {interval[landed]:.1f} s){' during a write' if hit else ''}; "
              f"temp files {len(record['temp_files'])}, load problems {len(record['load_problems'])}", flush=True)  # fmt: skip
    # Let the run finish.
    proc = launch(args.data, out)
    launches += 1
    finished = proc.popen.wait() == 0
    soak_wall = time.monotonic() - t_start

    killed = [r for r in kills if r.get("killed")]
    result = {
        "machine": machine_name(),
        "data": args.data,
        "kills": len(killed),
        "kills_per_stage": {s: sum(r["stage"] == s for r in killed) for s in STAGES},
        "kills_during_write": sum(bool(r["during_write"]) for r in killed),
        "launches": launches,
        "resumed_runs": launches - 1,
        "finished": finished,
        "max_lost_seconds": {s: max((r["lost_seconds"] for r in killed if r["stage"] == s), default=None) for s in STAGES},
        "interval_seconds": {s: round(v, 2) for s, v in interval.items()},
        "all_within_interval": all(r["within_interval"] for r in killed),
        # Launch to the killed stage's start: the start-up cost of a resume where the process
        # resumed inside that stage (the longest include finishing the stages before it).
        "median_resume_seconds": statistics.median(r["resume_seconds"] for r in killed) if killed else None,
        "temp_files_after_a_kill": max((len(r["temp_files"]) for r in killed), default=0),
        "temp_files_at_the_end": temp_files(out),
        "load_problems": sum(len(r["load_problems"]) for r in killed),
        "soak_wall_seconds": soak_wall,
        "reference_wall_seconds": sum(float(ref_stages[s].get("wall", ref_stages[s].get("seconds", 0))) for s in STAGES),
        "kill_records": kills,
    }  # fmt: skip
    if finished:
        result["student_bit_identical"] = bool(compare_runs(run.root, ref.root)["student.pt"])
        result["psnr_soak"] = student_psnr(run, args.data, args.split)
        result["psnr_reference"] = student_psnr(ref, args.data, args.split)
        result["psnr_delta_db"] = result["psnr_soak"] - result["psnr_reference"]
    print({k: v for k, v in result.items() if k != "kill_records"})
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
