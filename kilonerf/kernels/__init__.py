"""Backends for grouped tiny-MLP evaluation behind one interface."""

from __future__ import annotations

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


register_backend("torch_ref", _torch_ref)

__all__ = ["GroupedBackend", "MultiNetParams", "available_backends", "get_backend", "register_backend"]
