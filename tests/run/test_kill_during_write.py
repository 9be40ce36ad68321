"""A process killed (SIGKILL) while it writes a checkpoint leaves the previous checkpoint
intact and only a temp file beside it, which is never read and is removed on resume."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from kilonerf.cli import main
from kilonerf.io import safe_torch_load

WRITER = """
import sys, time
from kilonerf.io import atomic_output
with atomic_output(sys.argv[1]) as tmp, open(tmp, "wb") as f:
    f.write(b"PK\\x03\\x04" + bytes(100_000))  # the start of a zip, as torch.save writes
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_checkpoint_write_killed_midway(trained_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    ckpt = run / "teacher" / "checkpoint.pt"
    before = ckpt.read_bytes()
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(ckpt)], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    child.kill()
    child.wait()
    assert ckpt.read_bytes() == before and int(safe_torch_load(ckpt)["step"]) == 15
    temps = [p for p in ckpt.parent.iterdir() if p.name != "checkpoint.pt"]
    assert len(temps) == 1 and temps[0].name.startswith(".checkpoint.pt.") and temps[0].stat().st_size > 0
    assert main(["train", "--out", str(run), "--device", "cpu"]) == 0  # resumes: every stage already done
    assert sorted(p.name for p in ckpt.parent.iterdir()) == ["checkpoint.pt"]
    assert ckpt.read_bytes() == before
