"""Errors that the CLI reports as one line (exit code 2) instead of a traceback."""

from __future__ import annotations

from pathlib import Path


class KiloNerfError(Exception):
    """A user-facing error: bad input, a missing file, an unusable run directory."""


class SceneError(KiloNerfError):
    """A scene folder or one of its files cannot be loaded; the message names the file."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class RunError(KiloNerfError):
    """A run directory is missing an input, or was written by an incompatible version."""
