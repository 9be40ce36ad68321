"""`kilonerf render` at tiny settings: every path kind, MP4 and PNG output, the JSON round trip,
and errors that leave nothing behind."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from kilonerf.cli import main
from kilonerf.data.images import read_image
from kilonerf.errors import KiloNerfError
from kilonerf.video import write_mp4, write_png_dir


def _render(run: Path, *args: str) -> int:
    return main(["render", str(run), "--device", "cpu", *args])


def _frames(folder: Path) -> list[np.ndarray]:
    return [read_image(p) for p in sorted(folder.glob("*.png"))]


def test_orbit_mp4_matches_the_png_frames(trained_run: Path, tmp_path: Path) -> None:
    common = ["--path", "orbit", "--frames", "3", "--resolution", "12", "--model", "teacher"]
    assert _render(trained_run, *common, "--out", str(tmp_path / "v.mp4")) == 0
    assert _render(trained_run, *common, "--out", str(tmp_path / "frames")) == 0
    pngs = _frames(tmp_path / "frames")
    video = iio.imread(tmp_path / "v.mp4")
    assert len(pngs) == 3 and pngs[0].shape == (12, 12, 3) and video.shape == (3, 12, 12, 3)
    # H.264 is lossy, but each decoded frame is close to its PNG and far from the others.
    errors = np.abs(video.astype(np.float32) - np.stack(pngs).astype(np.float32)).mean(axis=(1, 2, 3))
    assert (errors < 6.0).all(), errors
    assert not np.array_equal(pngs[0], pngs[1])  # the camera moved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "v.mp4"]  # no temp files left


def test_saved_path_renders_the_same_frames(trained_run: Path, tmp_path: Path) -> None:
    """--save-path writes the generated spiral; rendering that file gives identical frames."""
    path_file = tmp_path / "spiral.json"
    common = ["--frames", "2", "--resolution", "10", "--model", "teacher"]
    assert _render(trained_run, "--path", "spiral", *common, "--out", str(tmp_path / "a"), "--save-path", str(path_file)) == 0
    saved = json.loads(path_file.read_text())
    assert (saved["width"], saved["height"], len(saved["frames"])) == (10, 10, 2)
    assert _render(trained_run, "--path", str(path_file), "--model", "teacher", "--out", str(tmp_path / "b")) == 0
    a, b = _frames(tmp_path / "a"), _frames(tmp_path / "b")
    assert len(a) == 2 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_save_path_alone_renders_nothing(trained_run: Path, tmp_path: Path) -> None:
    assert _render(trained_run, "--path", "orbit", "--frames", "5", "--save-path", str(tmp_path / "p.json")) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]
    assert len(json.loads((tmp_path / "p.json").read_text())["frames"]) == 5


def test_test_path_reproduces_eval_renders(trained_run: Path, tmp_path: Path) -> None:
    """The test split's cameras through `render` give the images `eval` saves for them."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert main(["eval", str(run), "--model", "teacher", "--split", "test", "--device", "cpu"]) == 0
    assert _render(run, "--path", "test", "--model", "teacher", "--out", str(tmp_path / "t")) == 0
    rendered = _frames(tmp_path / "t")
    names = [r["name"] for r in json.loads((run / "eval" / "teacher_test" / "metrics.json").read_text())["images"]]
    assert len(rendered) == len(names) == 2
    for frame, name in zip(rendered, names):
        diff = np.abs(frame.astype(int) - read_image(run / "eval" / "teacher_test" / f"{name}.png").astype(int))
        assert diff.max() <= 1


def test_student_is_the_default_model(trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _render(trained_run, "--path", "test", "--frames", "1", "--resolution", "6", "--out", str(tmp_path / "s")) == 0
    assert "with the student" in capsys.readouterr().out
    assert [f.shape for f in _frames(tmp_path / "s")] == [(6, 6, 3)]


def _stage_run(trained_run: Path, tmp_path: Path, remove: str) -> Path:
    run = tmp_path / "partial"
    shutil.copytree(trained_run, run)
    (run / remove).unlink()
    return run


def _other_version(trained_run: Path, tmp_path: Path) -> Path:
    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "run_format": 0}))
    return run


@pytest.mark.parametrize(
    "make_run, args, message",
    [
        (lambda r, t: t / "nowhere", ["--out", "v.mp4"], "run directory not found"),
        (_other_version, ["--out", "v.mp4"], "another kilonerf version"),
        (lambda r, t: _stage_run(r, t, "student.pt"), ["--out", "v.mp4", "--model", "student"], "--stage finetune"),
        (lambda r, t: r, ["--out", "v.avi"], "unsupported output '.avi'"),
        (lambda r, t: r, ["--path", "missing.json", "--out", "v.mp4"], "missing.json: no such camera-path file"),
        (lambda r, t: r, ["--path", "bad.json", "--out", "v.mp4"], "bad.json: 'width' must be"),
        (lambda r, t: r, ["--out", "exists.mp4"], "already exists"),
        (lambda r, t: r, ["--path", "orbit"], "give --out"),
    ],
)
def test_errors_are_one_line_exit_2_and_leave_nothing(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make_run, args: list[str], message: str
) -> None:
    run = make_run(trained_run, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    (work / "bad.json").write_text('{"frames": []}')
    (work / "exists.mp4").write_bytes(b"old")
    before = sorted(p.name for p in work.iterdir())
    argv = [str(work / a) if a.endswith((".mp4", ".avi", ".json")) else a for a in args]
    assert _render(run, "--frames", "2", "--resolution", "8", *argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kilonerf: error:") and "\n" not in err and message in err, err
    assert sorted(p.name for p in work.iterdir()) == before and (work / "exists.mp4").read_bytes() == b"old"


def _failing_frames(count: int) -> Iterator[np.ndarray]:
    for k in range(count):
        yield np.full((8, 10, 3), 40 * k, np.uint8)
    raise KiloNerfError("render failed half way")


@pytest.mark.parametrize("name, writer", [("v.mp4", lambda p, f: write_mp4(p, f, 10)), ("frames", write_png_dir)])
def test_a_failure_half_way_leaves_nothing_partial(tmp_path: Path, name: str, writer) -> None:
    with pytest.raises(KiloNerfError, match="half way"):
        writer(tmp_path / name, _failing_frames(2))
    assert list(tmp_path.iterdir()) == []


def test_odd_sizes_are_padded_for_h264(tmp_path: Path) -> None:
    frames = [np.full((7, 9, 3), v, np.uint8) for v in (0, 120, 250)]
    assert write_mp4(tmp_path / "odd.mp4", iter(frames), fps=5) == 3
    video = iio.imread(tmp_path / "odd.mp4")
    assert video.shape == (3, 8, 10, 3)
    assert np.allclose(video.reshape(3, -1).mean(axis=1), [0, 120, 250], atol=4)
