"""A forward-facing capture end to end: the LLFF fern, 16 times smaller, trained for a few
steps in NDC; every later command follows the run's scene type and image size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kilonerf.cli import main
from kilonerf.run.folder import RunDir
from kilonerf.run.models import load_run_scene
from tests.helpers.runs import TINY_TRAIN


@pytest.mark.slow
def test_fern_trains_evaluates_and_renders_in_ndc(fern_llff: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    torch.set_num_threads(1)
    run = tmp_path / "fern"
    assert main(["train", str(fern_llff), "--out", str(run), "--device", "cpu", "--downscale", "16", *TINY_TRAIN]) == 0
    meta = json.loads((run / "run.json").read_text())
    assert meta["scene_type"] == "forward" and meta["downscale"] == 16.0
    # The scene type's settings over the preset's, --set still winning.
    assert meta["config"]["teacher_params"]["z_cell_ratio"] == 3.0
    assert meta["config"]["teacher_params"]["total_steps"] == 15
    scene = load_run_scene(RunDir(run))
    assert scene.scene_type == "forward" and scene.image_size(0) == (24, 32)
    capsys.readouterr()
    assert main(["eval", str(run), "--split", "test", "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["psnr"] > 5.0
    assert main(["render", str(run), "--out", str(tmp_path / "frames"), "--frames", "2",
                 "--save-path", str(tmp_path / "path.json")]) == 0  # fmt: skip
    assert len(list((tmp_path / "frames").glob("*.png"))) == 2
    path = json.loads((tmp_path / "path.json").read_text())
    assert path["width"] == 32  # the run's size, on the default spiral
    # Forcing the other type on the same run is refused.
    assert main(["train", str(fern_llff), "--out", str(run), "--scene-type", "object"]) == 2
    assert "scene type 'forward'" in capsys.readouterr().err
