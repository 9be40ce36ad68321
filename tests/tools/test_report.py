"""`kilonerf report`: the page and its assets, graceful gaps, errors, and a real headless
browser (Chromium from Debian's packages; skipped when it is not installed)."""

from __future__ import annotations

import io
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kilonerf.cli import main
from kilonerf.report.curves import plot_training_curves
from kilonerf.report.images import ERROR_MAX, colorize, error_heatmap, pick_views

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def report_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with teacher (2 views) and student (1 view) evaluations of the
    test split, a 2-frame orbit video and a speed summary, and its report."""
    run = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(trained_run, run)
    shutil.rmtree(run / "eval", ignore_errors=True)
    assert main(["eval", str(run), "--model", "teacher", "--split", "test", "--device", "cpu"]) == 0
    assert main(["eval", str(run), "--model", "student", "--split", "test", "--max-views", "1", "--device", "cpu"]) == 0
    assert main(["eval", str(run), "--model", "teacher", "--split", "val", "--device", "cpu"]) == 0
    video = ["--path", "orbit", "--frames", "2", "--model", "teacher", "--out", str(run / "video.mp4")]
    assert main(["render", str(run), *video, "--device", "cpu"]) == 0
    summary = {
        "teacher": {"psnr": 20.5, "ssim": 0.8, "lpips": 0.2, "ms_per_frame": 900.0},
        "student": {"psnr": 20.1, "ssim": 0.79, "lpips": 0.21, "ms_per_frame": 30.0},
        "speedup_over_nerf": 1822.2,
        "bench": {"rows": [{"name": "dense", "ms_per_frame": 300.0, "samples_per_ray": 384, "speedup": 3.0}]},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    assert main(["report", str(run)]) == 0
    return run


def _sources(html: str) -> list[str]:
    return re.findall(r'<(?:img|video)[^>]* src="([^"]+)"', html)


def test_report_files_and_links(report_run: Path) -> None:
    html = (report_run / "report.html").read_text()
    sources = _sources(html)
    # 1 common view (gt, teacher, student, error) + error scale + curves + the video
    assert len(sources) == 7 and "video.mp4" in sources
    for src in sources:
        assert not src.startswith(("/", "http:", "https:", "file:")) and (report_run / src).is_file(), src
    assert not re.search(r"(?:href|src)=\"(?:https?:)?//", html)  # nothing fetched from outside
    assert "Quality on the &#x27;test&#x27; split" in html and "dense" in html
    # Both ratios, each with its own label: 900 / 30 ms is the student's over the teacher.
    assert "KiloNeRF speed-up over NeRF (kilonerf bench): <b>1822.2x</b>" in html
    assert "student speed-up over the teacher (ms per frame in eval): <b>30.0x</b>" in html
    metrics = json.loads((report_run / "eval" / "teacher_test" / "metrics.json").read_text())
    assert f"{metrics['psnr']:.2f}" in html  # the table shows the measured values
    names = sorted(p.name for p in (report_run / "report").iterdir())
    assert names == sorted(["error_scale.png", "training_curves.png", *(f"view0_{c}.png" for c in ("gt", "teacher", "student", "error"))])


def test_report_split_option_and_missing_pieces(report_run: Path, tmp_path: Path) -> None:
    """Only the teacher evaluated the val split, and a copy without summary, video or history
    still gets a page, with notes in place of the missing parts."""
    run = tmp_path / "bare"
    shutil.copytree(report_run, run)
    for name in ("summary.json", "video.mp4", "stages.json"):
        (run / name).unlink()
    assert main(["report", str(run), "--split", "val", "--views", "2"]) == 0
    html = (run / "report.html").read_text()
    assert "no student evaluation of &#x27;val&#x27;" in html and "no speed measurements" in html
    assert "no video" in html and "no training record" in html
    assert len(_sources(html)) == 2 * 3 + 1  # gt, teacher, error per view, plus the scale
    for src in _sources(html):
        assert (run / src).is_file()
    assert main(["report", str(run), "--split", "train"]) == 0
    assert "no evaluated views" in (run / "report.html").read_text()


def test_report_without_the_scene_folder(report_run: Path, tmp_path: Path) -> None:
    """The photos moved away: the renders are still shown, the ground truth gets a note."""
    run = tmp_path / "moved"
    shutil.copytree(report_run, run)
    for metrics in (run / "eval").glob("*/metrics.json"):
        metrics.write_text(json.dumps({**json.loads(metrics.read_text()), "data": str(tmp_path / "gone")}))
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "ground truth not shown" in html and "scene folder not found" in html
    assert [s for s in _sources(html) if "view0" in s] == ["report/view0_teacher.png", "report/view0_student.png"]


def test_report_copies_an_outside_video(report_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "copy"
    shutil.copytree(report_run, run)
    outside = tmp_path / "elsewhere.mp4"
    (run / "video.mp4").rename(outside)
    assert main(["report", str(run), "--video", str(outside)]) == 0
    assert "report/video.mp4" in _sources((run / "report.html").read_text())
    assert (run / "report" / "video.mp4").read_bytes() == outside.read_bytes()


@pytest.mark.parametrize(
    "setup, args, message",
    [
        (lambda run: None, ["--video", "nope.mp4"], "video file not found"),
        (lambda run: (run / "run.json").write_text('{"run_format": 99}'), [], "another kilonerf version"),
        (lambda run: shutil.rmtree(run), [], "run directory not found"),
        (lambda run: (run / "eval" / "teacher_test" / "metrics.json").write_text("{oops"), [], "malformed JSON"),
        (lambda run: (run / "eval" / "teacher_test" / "metrics.json").write_text('{"images": [{"psnr": 30}]}'), [],
         "not an evaluation written by `kilonerf eval`"),
    ],
)
def test_report_errors(report_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], setup, args, message) -> None:
    run = tmp_path / "r"
    shutil.copytree(report_run, run)
    (run / "report.html").unlink()
    setup(run)
    assert main(["report", str(run), *[str(tmp_path / a) if a.endswith(".mp4") else a for a in args]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kilonerf: error:") and "\n" not in err and message in err, err
    assert not (run / "report.html").exists()


def test_pick_views_spreads_over_common_names() -> None:
    evals = {"teacher": {"images": [{"name": f"v{i}"} for i in range(9)]},
             "student": {"images": [{"name": f"v{i}"} for i in range(0, 9, 2)]}}  # fmt: skip
    assert pick_views(evals, 3) == ["v0", "v4", "v8"]
    assert pick_views(evals, 10) == ["v0", "v2", "v4", "v6", "v8"] and pick_views({}, 3) == []


def test_error_heatmap_scale() -> None:
    gt = np.full((2, 2, 3), 100, np.uint8)
    half, top = round(100 + 127.5 * ERROR_MAX), round(100 + 255 * ERROR_MAX) + 1
    pred = np.array([[[100] * 3, [half] * 3], [[top] * 3, [70, 100, 100]]], np.uint8)
    heat = error_heatmap(pred, gt).astype(int)
    expected = colorize(np.array([0.0, 0.5, 1.0, 10 / 255 / ERROR_MAX])).astype(int)  # the last: mean over RGB
    assert np.array_equal(heat[0, 0], expected[0]) and np.array_equal(heat[1, 0], expected[2])
    assert np.abs(heat[0, 1] - expected[1]).max() <= 8 and np.abs(heat[1, 1] - expected[3]).max() <= 8
    assert len({tuple(c) for c in heat.reshape(-1, 3)}) == 4


def test_curves_skip_stages_without_history(tmp_path: Path) -> None:
    out = tmp_path / "c.png"
    assert plot_training_curves({"occupancy": {"seconds": 1.0}}, out) == [] and not out.exists()
    stages = {"teacher": {"history": [{"step": 1, "elapsed": 0.5, "wall": 0.6, "psnr": 12.0, "val_psnr": 11.0}]}}
    assert plot_training_curves(stages, out) == ["teacher"] and Image.open(out).size[0] > 100


# ---- a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201 - selenium is optional
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.skip("Chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(arg)
    # The Debian driver, by path: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 10.0):  # noqa: ANN001, ANN202
    end = time.monotonic() + timeout
    while not (value := driver.execute_script(script)) and time.monotonic() < end:
        time.sleep(0.1)
    return value


@pytest.mark.browser
def test_report_opens_in_chromium_with_every_image(report_run: Path, browser) -> None:  # noqa: ANN001
    browser.get((report_run / "report.html").resolve().as_uri())
    assert _wait(browser, "return document.readyState === 'complete'")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
    )
    assert len(images) == 6
    assert all(complete and width > 0 for _, complete, width in images), images
    if browser.execute_script("return document.createElement('video').canPlayType('video/mp4; codecs=\"avc1.42E01E\"')"):
        # This Chromium decodes H.264: the embedded video must load too.
        assert _wait(browser, "const v = document.querySelector('video'); return v.readyState >= 1 && v.videoWidth > 0")
    shot = np.asarray(Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB"))
    non_white = (shot < 245).any(axis=-1).mean()
    colours = len(np.unique(shot.reshape(-1, 3)[::7], axis=0))
    assert non_white > 0.05 and colours > 50, (non_white, colours)


@pytest.mark.browser
def test_a_broken_image_is_detected(report_run: Path, browser, tmp_path: Path) -> None:  # noqa: ANN001
    """The browser check itself can fail: remove one asset and the page shows a broken image."""
    run = tmp_path / "broken"
    shutil.copytree(report_run, run)
    (run / "report" / "view0_student.png").unlink()
    browser.get((run / "report.html").resolve().as_uri())
    assert _wait(browser, "return document.readyState === 'complete'")
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))"
    )
    assert broken == ["report/view0_student.png"]
