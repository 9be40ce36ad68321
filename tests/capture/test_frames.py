"""Collecting the images of a capture: photo folders, EXIF focal, video frames by sharpness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from kilonerf.capture.frames import (EXIF_IFD, FOCAL_35MM, even_picks, exif_focal, read_capture, read_photos,
                                     read_video, sharpest_per_window, sharpness)  # fmt: skip
from kilonerf.errors import SceneError
from kilonerf.video import write_mp4


def texture(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)


def blurred(image: np.ndarray, radius: float) -> np.ndarray:
    return np.array(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def test_sharpness_ranks_blur() -> None:
    image = texture(0)
    scores = [sharpness(blurred(image, r)) for r in (0.0, 0.7, 1.5, 3.0)]
    assert scores == sorted(scores, reverse=True) and scores[0] > 5 * scores[2]


def test_sharpest_per_window() -> None:
    scores = np.array([1.0, 5.0, 2.0, 9.0, 3.0, 0.0, 4.0, 1.0, 8.0])
    assert sharpest_per_window(scores, 3).tolist() == [1, 3, 8]
    assert sharpest_per_window(scores, 20).tolist() == list(range(9))
    assert even_picks(10, 4).tolist() == [0, 3, 6, 9] and even_picks(3, None).tolist() == [0, 1, 2]


def test_photos_in_natural_order_resized_with_exif_focal(tmp_path: Path) -> None:
    for i in (10, 2, 1):
        exif = Image.Exif()
        exif.get_ifd(EXIF_IFD)[FOCAL_35MM] = 36  # a focal length equal to the width
        Image.fromarray(texture(i, 80)).save(tmp_path / f"img{i}.jpg", quality=95, exif=exif)
    (tmp_path / "notes.txt").write_text("not a photo")
    assert exif_focal(tmp_path / "img1.jpg") == pytest.approx(80.0)
    cap = read_photos(tmp_path, max_size=40)
    assert cap.names == ["img1.png", "img2.png", "img10.png"] and cap.total == 3
    assert all(im.shape == (40, 40, 3) for im in cap.images)
    assert cap.focal == pytest.approx(40.0)  # follows the resize


@pytest.mark.parametrize("case", ["empty", "two", "unreadable", "mixed"])
def test_bad_photo_folders(tmp_path: Path, case: str) -> None:
    if case in ("two", "unreadable", "mixed"):
        for i in range(2 if case == "two" else 3):
            Image.fromarray(texture(i)).save(tmp_path / f"p{i}.png")
    if case == "unreadable":
        (tmp_path / "p1.png").write_bytes(b"\x89PNG broken")
    if case == "mixed":
        Image.fromarray(texture(9, 50)).save(tmp_path / "p2.png")
    expected = {"empty": "no photos", "two": "only 2 photos", "unreadable": "p1.png", "mixed": "p2.png: is 50 x 50"}[case]
    with pytest.raises(SceneError, match=expected):
        read_capture(tmp_path)


def test_video_frames_keep_the_sharpest_of_each_window(tmp_path: Path) -> None:
    """12 frames, every other one blurred: 6 windows of 2 keep the 6 sharp ones."""
    frames = [texture(i // 2) if i % 2 else blurred(texture(i // 2), 2.0) for i in range(12)]
    video = tmp_path / "clip.mp4"
    write_mp4(video, frames, fps=10)
    cap = read_video(video, max_images=6)
    assert cap.names == [f"frame_{i:05d}.png" for i in (1, 3, 5, 7, 9, 11)] and cap.total == 12
    assert cap.source == "video" and cap.images[0].shape == (64, 64, 3)


def test_video_without_frames(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SceneError, match="broken.mp4"):
        read_capture(bad)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SceneError, match="not a folder of photos nor a video"):
        read_capture(tmp_path / "notes.txt")
