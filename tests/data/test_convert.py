"""``kilonerf convert`` and the NSVF / Blender writers: converted copies load back identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tests.helpers.scenes import random_image

from kilonerf.cli import main
from kilonerf.data import Scene, load_scene
from kilonerf.data import convert as convert_mod
from kilonerf.data.cameras import camera_rays
from kilonerf.data.convert import convert_scene, write_blender, write_nsvf
from kilonerf.errors import KiloNerfError


def split_rays(scene: Scene, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Rays through 9 pixels (corners, edge midpoints, centre) of every image of ``split``:
    origins, dirs (9 M, 3) float64. Rays are affine in the pixel position before
    normalisation, so these pin down every pixel's ray."""
    idx = scene.indices(split)
    pix = []
    for i in idx:
        h, w = scene.image_size(int(i))
        xs, ys = np.meshgrid([0.5, w / 2, w - 0.5], [0.5, h / 2, h - 0.5])
        pix.append(np.stack([xs.ravel(), ys.ravel()], axis=-1))
    rep = np.repeat(idx, 9)
    pixels = torch.as_tensor(np.concatenate(pix))
    o, d = camera_rays(torch.as_tensor(scene.poses[rep]), torch.as_tensor(scene.intrinsics[rep]), pixels)
    return o.numpy(), d.numpy()


def assert_same_scene(a: Scene, b: Scene) -> None:
    """Per split: bit-identical pixels, rays within 1e-6; same box, near/far, background."""
    assert set(a.splits) == set(b.splits)
    for split in a.splits:
        ia, ib = a.indices(split), b.indices(split)
        assert len(ia) == len(ib)
        for i, j in zip(ia, ib):
            assert a.images[i].dtype == b.images[j].dtype == np.uint8
            assert np.array_equal(a.images[i], b.images[j]), f"{split} image {i} differs"
        for ra, rb in zip(split_rays(a, split), split_rays(b, split)):
            assert np.abs(ra - rb).max() <= 1e-6
    np.testing.assert_array_equal(a.bbox, b.bbox)
    assert (a.near, a.far) == (b.near, b.far)
    np.testing.assert_array_equal(a.background, b.background)


def odd_scene(per_image_intrinsics: bool) -> Scene:
    """4 images with non-square, off-centre intrinsics and a black background."""
    rng = np.random.default_rng(5)
    poses = np.tile(np.eye(4), (4, 1, 1))
    poses[:, :3, 3] = rng.normal(size=(4, 3))
    q, _ = np.linalg.qr(rng.normal(size=(4, 3, 3)))
    poses[:, :3, :3] = q * np.sign(np.linalg.det(q))[:, None, None]
    intr = np.tile([7.25, 9.5, 3.1, 2.2], (4, 1)) + (np.arange(4)[:, None] * 0.1 if per_image_intrinsics else 0)
    return Scene(
        images=[random_image(rng, 6, 8, 3) for _ in range(4)],
        intrinsics=intr,
        poses=poses,
        splits={"train": np.array([0, 2, 3]), "test": np.array([1])},
        bbox=np.array([[-1.0, -2.0, -0.5], [1.0, 2.0, 0.5]]),
        near=0.1,
        far=3.7,
        background=np.zeros(3, dtype=np.float32),
        image_names=["b", "a", "c c", "a"],
    )


def test_cli_lego_to_nsvf_and_blender(lego_100: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = load_scene(lego_100)
    dst = tmp_path / "lego_nsvf"
    assert main(["convert", str(lego_100), str(dst), "--to", "nsvf"]) == 0
    for name in ("bbox.txt", "intrinsics.txt", "near_and_far.txt", "background_color.txt"):
        assert (dst / name).is_file()
    assert len(list((dst / "rgb").glob("0_*.png"))) == 100 and len(list((dst / "pose").glob("1_*.txt"))) == 100
    nsvf = load_scene(dst)
    assert nsvf.format == "nsvf"
    assert_same_scene(src, nsvf)
    assert nsvf.image_names == src.image_names

    back = tmp_path / "lego_blender"
    assert main(["convert", str(dst), str(back), "--to", "blender"]) == 0
    blender = load_scene(back)
    assert blender.format == "blender"
    assert_same_scene(src, blender)
    assert "wrote blender scene" in capsys.readouterr().out


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("writer", [write_nsvf, write_blender])
def test_odd_intrinsics_round_trip(tmp_path: Path, writer, per_image: bool) -> None:
    scene = odd_scene(per_image)
    writer(scene, tmp_path / "out")
    loaded = load_scene(tmp_path / "out")
    assert_same_scene(scene, loaded)
    np.testing.assert_array_equal(loaded.intrinsics, scene.intrinsics[np.r_[0, 2, 3, 1]])
    if writer is write_nsvf:
        assert (tmp_path / "out" / "intrinsics").is_dir() == per_image


def test_llff_to_nsvf(fern_llff: Path, tmp_path: Path) -> None:
    src = load_scene(fern_llff, splits=["test"], scene_type="object")
    convert_scene(fern_llff, tmp_path / "fern", to="nsvf")
    out = load_scene(tmp_path / "fern", splits=["test"], scene_type="object")
    assert_same_scene(src, out)


def test_mixed_sizes_cannot_be_written(tmp_path: Path) -> None:
    scene = odd_scene(False)
    scene.images[2] = random_image(np.random.default_rng(0), 5, 8, 3)
    with pytest.raises(KiloNerfError, match="one image size per split"):
        write_nsvf(scene, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_and_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_blender(odd_scene(False), tmp_path / "src")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "old.txt").write_text("x")
    assert main(["convert", str(tmp_path / "src"), str(dst), "--to", "nsvf"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and str(dst) in err and len(err.strip().splitlines()) == 1
    assert (dst / "old.txt").is_file()
    assert main(["convert", str(tmp_path / "src"), str(dst), "--to", "nsvf", "--overwrite"]) == 0
    assert not (dst / "old.txt").exists() and (dst / "bbox.txt").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]
    with pytest.raises(KiloNerfError, match="replace the source"):
        convert_scene(tmp_path / "src", tmp_path / "src", to="nsvf", overwrite=True)
    with pytest.raises(KiloNerfError, match="replace the source"):
        convert_scene(tmp_path / "src", tmp_path, to="nsvf", overwrite=True)


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scene = odd_scene(False)
    write_nsvf(scene, tmp_path / "keep")
    calls: list[Path] = []

    def failing_png(path: Path, array: np.ndarray) -> None:
        calls.append(path)
        if len(calls) % 4 == 3:
            raise OSError("disk full")
        Path(path).write_bytes(b"")

    monkeypatch.setattr(convert_mod, "write_png", failing_png)
    with pytest.raises(OSError, match="disk full"):
        write_nsvf(scene, tmp_path / "new")
    with pytest.raises(OSError, match="disk full"):
        write_blender(scene, tmp_path / "keep", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]
    assert_same_scene(scene, load_scene(tmp_path / "keep"))


def test_cli_help_and_bad_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["convert", "--help"])
    assert info.value.code == 0
    assert "--to" in capsys.readouterr().out
    (tmp_path / "junk").mkdir()
    code = main(["convert", str(tmp_path / "junk"), str(tmp_path / "out"), "--to", "nsvf"])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "junk") in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()
