"""Positional encoding and the backends for grouped tiny-MLP evaluation behind one interface
(each may also offer a fused march-evaluate-composite renderer)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

from kilonerf.errors import KiloNerfError
from kilonerf.kernels.base import GroupedBackend, MultiNetParams

_FACTORIES: dict[str, Callable[[], GroupedBackend]] = {}
_INSTANCES: dict[str, GroupedBackend] = {}


def register_backend(name: str, factory: Callable[[], GroupedBackend]) -> None:
    """Make ``get_backend(name)`` build a backend with ``factory`` (called once, lazily, so
    optional dependencies such as a compiler or Triton are only imported when asked for)."""
    _FACTORIES[name] = factory
    _INSTANCES.pop(name, None)


def available_backends() -> list[str]:
    """Names accepted by :func:`get_backend`."""
    return sorted(_FACTORIES)


def get_backend(name: str | GroupedBackend = "torch_ref") -> GroupedBackend:
    """The backend registered as ``name`` (a backend instance passes through unchanged)."""
    if isinstance(name, GroupedBackend):
        return name
    if name not in _FACTORIES:
        raise KiloNerfError(f"unknown kernel backend '{name}' (available: {', '.join(available_backends())})")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]


def _torch_ref() -> GroupedBackend:
    from kilonerf.kernels.torch_ref import TorchRefBackend

    return TorchRefBackend()


def _cpu() -> GroupedBackend:
    from kilonerf.kernels.native import NativeUnavailable

    try:
        from kilonerf.kernels.cpu import CpuFusedBackend

        return CpuFusedBackend()
    except NativeUnavailable as exc:
        warnings.warn(f"fast CPU backend unavailable, using the pure-torch reference instead: {exc}", stacklevel=2)
        return _torch_ref()


def default_render_backend(device: str | object = "cpu") -> str:
    """Backend name for rendering on ``device``, and for training a student (its ``auto``): the
    compiled ``cpu`` backend on the CPU (it falls back to ``torch_ref`` by itself, with one
    warning, where it cannot be built), else ``torch_ref``."""
    return "cpu" if str(device).startswith("cpu") else "torch_ref"


def _triton(precision: str) -> Callable[[], GroupedBackend]:
    """A factory for the Triton backend with ``precision`` operands (Triton imported at first use)."""

    def build() -> GroupedBackend:
        try:
            from kilonerf.kernels.triton_mlp import TritonBackend
        except ImportError as exc:
            raise KiloNerfError(f"kernel backend 'triton' needs the triton package (pip install triton): {exc}") from exc
        return TritonBackend(precision)

    return build


register_backend("torch_ref", _torch_ref)
register_backend("cpu", _cpu)
register_backend("triton", _triton("tf32"))
register_backend("triton_fp16", _triton("fp16"))

__all__ = [
    "GroupedBackend", "MultiNetParams", "available_backends", "default_render_backend", "get_backend", "register_backend",
]
