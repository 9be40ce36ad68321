"""Structure from motion on the CPU through pycolmap: SIFT features, matching, incremental mapping.

- One shared camera (every image comes from one camera at one size) with COLMAP's
  ``SIMPLE_RADIAL`` model: one focal length, the principal point, one radial coefficient.
  Its few parameters stay well determined from the modest, low-texture captures this is meant
  for; richer models (``OPENCV``'s two focal lengths and four coefficients) drifted into
  focal / distortion trade-offs on such captures in our tests.
- SIFT with domain-size pooling (DSP-SIFT): descriptors pooled over several scales, which
  matched the built-in scenes' views far more reliably than plain SIFT.
- Pairs to match: every pair (``exhaustive``, for photo sets), or each frame with its
  :data:`SEQUENTIAL_OVERLAP` successors, the frames 2^k further on, and the first frames with
  the last ones (``sequential``, for videos: orbits end where they began).
- Each phase runs in chunks, so a progress bar counts images, pairs and registered images.
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kilonerf.data.distortion import colmap_camera
from kilonerf.errors import KiloNerfError

CAMERA_MODEL = "SIMPLE_RADIAL"
MATCHING = ("exhaustive", "sequential")
SEQUENTIAL_OVERLAP = 10
EXTRACT_CHUNK = 8
MATCH_CHUNK = 256


@dataclass
class Reconstruction:
    """The largest reconstruction found, in COLMAP's world (not yet normalised)."""

    names: list[str]
    """Registered images, in the order given."""
    poses: np.ndarray
    """(N, 4, 4) camera-to-world in OpenGL axes."""
    width: int
    height: int
    camera_model: str
    camera_params: list[float]
    intrinsics: np.ndarray
    """(4,) fx fy cx cy in pixels."""
    distortion: np.ndarray | None
    """(5,) k1 k2 k3 p1 p2, or None."""
    points: np.ndarray
    """(M, 3) sparse points."""
    colors: np.ndarray
    """(M, 3) uint8."""
    mean_error: float
    """Mean reprojection error in pixels."""
    total: int
    """Images given."""
    models: int
    """Separate reconstructions found (the largest is kept)."""
    seconds: dict[str, float] = field(default_factory=dict)
    """Wall time of each phase: features, matching, mapping."""

    @property
    def registered(self) -> int:
        return len(self.names)


def pairs_for(names: list[str], matching: str) -> list[tuple[str, str]]:
    """The image pairs to match (see the module docstring)."""
    n = len(names)
    if matching == "exhaustive":
        return list(itertools.combinations(names, 2))
    if matching != "sequential":
        raise KiloNerfError(f"--matching must be one of {', '.join(MATCHING)}, got '{matching}'")
    found: set[tuple[int, int]] = set()
    for i in range(n):
        for j in range(i + 1, min(n, i + SEQUENTIAL_OVERLAP + 1)):
            found.add((i, j))
        step = 2 * SEQUENTIAL_OVERLAP
        while i + step < n:
            found.add((i, i + step))
            step *= 2
    for i in range(min(n, SEQUENTIAL_OVERLAP)):  # loop closure of an orbit
        for j in range(max(i + 1, n - SEQUENTIAL_OVERLAP), n):
            found.add((i, j))
    return [(names[i], names[j]) for i, j in sorted(found)]


def _bar(total: int, desc: str, unit: str, show: bool) -> tqdm:
    return tqdm(total=total, desc=f"{desc:<9}", unit=unit, disable=not show, leave=True, dynamic_ncols=True)


def _timed(seconds: dict[str, float], name: str, fn: Callable[[], object]) -> object:
    start = time.perf_counter()
    try:
        return fn()
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def run_sfm(image_dir: Path, names: list[str], work: Path, matching: str, progress: bool = True,
            focal: float | None = None, size: tuple[int, int] | None = None) -> Reconstruction:
    """Reconstruct the images ``names`` of ``image_dir``; ``work`` holds COLMAP's database and
    models (the caller removes it or keeps it). ``focal`` (pixels), with the images' (height,
    width) ``size``, starts the shared camera's focal length there (refined by bundle adjustment).

    Raises:
        KiloNerfError: nothing could be reconstructed (the message says what to try).
    """
    import pycolmap

    pycolmap.logging.minloglevel = 2  # errors only: COLMAP's per-image log would bury the bars
    pycolmap.logging.stderrthreshold = 2
    work.mkdir(parents=True, exist_ok=True)
    db = work / "database.db"
    seconds: dict[str, float] = {}
    device = pycolmap.Device.cpu

    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = CAMERA_MODEL
    if focal is not None and size is not None:
        reader.camera_params = f"{focal},{size[1] / 2},{size[0] / 2},0"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.use_gpu = False
    extraction.sift.domain_size_pooling = True
    with _bar(len(names), "features", "img", progress) as bar:
        for k in range(0, len(names), EXTRACT_CHUNK):
            chunk = names[k:k + EXTRACT_CHUNK]
            _timed(seconds, "features", lambda: pycolmap.extract_features(
                db, image_dir, image_names=chunk, camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                extraction_options=extraction, device=device))  # fmt: skip
            reader.existing_camera_id = 1  # later chunks share the first chunk's camera
            bar.update(len(chunk))

    pairs = pairs_for(names, matching)
    options = pycolmap.FeatureMatchingOptions()
    options.use_gpu = False
    verification = pycolmap.TwoViewGeometryOptions()
    verification.ransac.random_seed = 0  # the same photos give the same scene, run after run
    pair_file = work / "pairs.txt"
    with _bar(len(pairs), "matching", "pair", progress) as bar:
        for k in range(0, len(pairs), MATCH_CHUNK):
            chunk_pairs = pairs[k:k + MATCH_CHUNK]
            pair_file.write_text("".join(f"{a} {b}\n" for a, b in chunk_pairs))
            pairing = pycolmap.ImportedPairingOptions()
            pairing.match_list_path = str(pair_file)
            _timed(seconds, "matching", lambda: pycolmap.match_image_pairs(
                db, matching_options=options, pairing_options=pairing, verification_options=verification,
                device=device))  # fmt: skip
            bar.update(len(chunk_pairs))

    mapper = pycolmap.IncrementalPipelineOptions()
    mapper.random_seed = 0
    # COLMAP drops models under 10 images; a small capture's only model must survive (the
    # registered-fraction check of the caller judges it instead).
    mapper.min_model_size = 3
    models_dir = work / "models"
    models_dir.mkdir(exist_ok=True)
    with _bar(len(names), "mapping", "img", progress) as bar:
        def step() -> None:
            bar.update(1) if bar.n < bar.total else None
        models = _timed(seconds, "mapping", lambda: pycolmap.incremental_mapping(
            db, image_dir, models_dir, mapper, initial_image_pair_callback=lambda: bar.update(min(2, bar.total - bar.n)),
            next_image_callback=step))  # fmt: skip
        assert isinstance(models, dict)
        best = max(models.values(), key=lambda r: r.num_reg_images()) if models else None
        # The callbacks count every attempt of every model tried; the bar ends at what registered.
        bar.n = best.num_reg_images() if best is not None else 0
        bar.refresh()
    shutil.rmtree(models_dir, ignore_errors=True)
    if best is None:
        raise KiloNerfError(f"no image of {len(names)} could be registered: the photos share too few features; "
                            "take photos with more overlap (each spot seen in 3+ views), avoid blur and plain surfaces"
                            + ("" if matching == "sequential" else ", or try --matching sequential for a video"))
    kept = work / "sparse" / "0"
    kept.mkdir(parents=True)
    best.write(kept)  # the model kept, in COLMAP's own format and layout, for other tools
    return _convert(best, names, len(models), seconds, image_dir)


def _convert(rec: object, names: list[str], n_models: int, seconds: dict[str, float], where: Path) -> Reconstruction:
    """pycolmap's reconstruction -> :class:`Reconstruction` (OpenGL camera-to-world poses)."""
    order = {name: i for i, name in enumerate(names)}
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: order[im.name])  # type: ignore[attr-defined]
    poses = []
    for im in images:
        w2c = np.eye(4)
        w2c[:3] = im.cam_from_world().matrix()
        c2w = np.linalg.inv(w2c)
        c2w[:3, 1:3] *= -1.0  # OpenCV camera axes (y down, z forward) -> OpenGL (y up, z back)
        poses.append(c2w)
    camera = rec.cameras[images[0].camera_id]  # type: ignore[attr-defined]
    params = [float(v) for v in camera.params]
    intrinsics, coeffs = colmap_camera(camera.model_name, params, where)
    pts = list(rec.points3D.values())  # type: ignore[attr-defined]
    points = np.array([p.xyz for p in pts], dtype=np.float64).reshape(-1, 3)
    colors = np.array([p.color for p in pts], dtype=np.uint8).reshape(-1, 3)
    return Reconstruction(
        names=[im.name for im in images], poses=np.array(poses).reshape(-1, 4, 4), width=int(camera.width),
        height=int(camera.height), camera_model=camera.model_name, camera_params=params, intrinsics=intrinsics,
        distortion=coeffs, points=points, colors=colors, mean_error=float(rec.compute_mean_reprojection_error()),  # type: ignore[attr-defined]
        total=len(names), models=n_models, seconds=seconds,
    )  # fmt: skip
