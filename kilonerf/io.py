"""Atomic file writes and safe checkpoint loading.

Everything the project writes goes through a temp file in the same folder followed by
``os.replace``, so an interrupted write never leaves a truncated file where a good one was.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from kilonerf.errors import KiloNerfError, RunError


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temp file beside ``path`` (same suffix, so tools that pick a format from the name
    still work) for the caller to fill; renamed to ``path`` when the block ends normally,
    removed when it raises."""
    path = Path(path)
    check_output_parent(path, "", create=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; the result should not be
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextmanager
def atomic_dir(dst: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """A fresh temp folder beside ``dst`` for the caller to fill; renamed to ``dst`` when the
    block ends normally (replacing an existing ``dst`` only with ``overwrite``), removed when
    it raises, so a failed or interrupted write leaves nothing partial."""
    dst = Path(dst)
    if (dst.exists() or dst.is_symlink()) and not overwrite:
        raise KiloNerfError(f"{dst}: already exists (pass --overwrite to replace it)")
    check_output_parent(dst, "", create=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the result should not be
        yield tmp
        if dst.exists() or dst.is_symlink():
            old = Path(tempfile.mkdtemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".old")) / "old"
            os.rename(dst, old)
            try:
                os.rename(tmp, dst)
            except BaseException:
                os.rename(old, dst)
                raise
            shutil.rmtree(old.parent, ignore_errors=True)
        else:
            os.rename(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_file(path: str | Path, what: str) -> Path:
    """``path`` if a command may write a file there: not a folder, inside an existing folder.
    Call it before any work, so a bad output path fails at once and nothing is written."""
    path = Path(path)
    if path.is_dir():
        raise KiloNerfError(f"{_named(what, path)}: is a folder; give a file name")
    check_output_parent(path, what)
    return path


def is_occupied(path: str | Path) -> bool:
    """Whether writing a folder at ``path`` would replace something: a file, or a non-empty folder."""
    path = Path(path)
    return path.exists() and (not path.is_dir() or any(path.iterdir()))


def check_output_parent(path: str | Path, what: str, create: bool = False) -> None:
    """The folder that will hold ``path`` exists (or, with ``create``, can be created: no file
    stands where one of its folders should be)."""
    path = Path(path)
    ancestor = next((a for a in path.parents if a.exists()), None)
    if ancestor is not None and not ancestor.is_dir():
        raise KiloNerfError(f"{_named(what, path)}: {ancestor} is a file, not a folder")
    if not create and not path.absolute().parent.is_dir():
        raise KiloNerfError(f"{_named(what, path)}: folder {path.parent} does not exist")


def _named(what: str, path: Path) -> str:
    return f"{what} {path}" if what else str(path)


_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.(tmp|old)(\.[A-Za-z0-9]+)?$")
"""Names :func:`atomic_output` and :func:`atomic_dir` give their temp files and folders."""


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete the temp files and folders that writes interrupted by a kill left in ``folder``
    (never a finished file: those carry their own names). Call it only while no other process
    writes there, e.g. when a run is reopened. Returns what was removed."""
    folder = Path(folder)
    removed = []
    for entry in folder.iterdir() if folder.is_dir() else []:
        if _TEMP_NAME.match(entry.name):
            shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file and rename."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` into memory, then write atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def safe_torch_load(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint without executing code from it (``weights_only=True``). A file that
    is missing, truncated, foreign or holds objects safe loading refuses is a one-line
    RunError naming it; the refusal is never worked around."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise RunError(f"{path}: not a kilonerf checkpoint: it holds objects that safe loading refuses{what}") from None
    except RuntimeError as exc:
        if "zip archive" not in str(exc) and "central directory" not in str(exc):
            raise RunError(f"{path}: not a readable kilonerf checkpoint ({_first_line(exc)})") from None
        raise RunError(f"{path}: not a kilonerf checkpoint (truncated, or not a PyTorch file)") from None
    except Exception as exc:  # corrupt or foreign file: one line for the user
        raise RunError(f"{path}: not a readable kilonerf checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


MAX_JSON_BYTES = 256 << 20
"""The largest JSON file read (a transforms.json of 10,000 frames is a few MB)."""


def _run_error(path: Path, problem: str) -> KiloNerfError:
    return RunError(f"{path}: {problem}")


def read_json(path: str | Path, error: Callable[[Path, str], KiloNerfError] = _run_error) -> Any:
    """Parse a JSON file. Anything wrong with it (missing, a folder, unreadable, too large,
    malformed, nested too deeply) is ``error(path, problem)``: a RunError unless the caller
    passes its own error type, e.g. :class:`~kilonerf.errors.SceneError` for scene files."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise error(path, f"JSON file too large ({size >> 20} MB; at most {MAX_JSON_BYTES >> 20} MB)")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(path, "file not found") from None
    except IsADirectoryError:
        raise error(path, "is a folder, not a JSON file") from None
    except UnicodeDecodeError as exc:
        raise error(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise error(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise error(path, "malformed JSON (nested too deeply)") from None
    except MemoryError:
        raise error(path, "malformed JSON (too large to parse)") from None
    except json.JSONDecodeError as exc:
        raise error(path, f"malformed JSON ({exc})") from None
    except ValueError:  # an integer beyond Python's digit limit for str -> int
        raise error(path, "malformed JSON (a number with too many digits)") from None
