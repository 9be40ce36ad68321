"""Settings with declared domains: every field of a stage config says which values it takes.

A config is a frozen dataclass deriving from :class:`Settings` whose fields are declared with
:func:`setting` (default and valid range side by side). Values are checked wherever they
enter: a preset or any other construction (``__post_init__``), ``run.json`` (``from_dict``)
and the command line (``parse``). A value outside its domain is a :class:`SettingError`
naming the setting as ``--set`` spells it and the domain, before any work starts.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any, ClassVar

from kilonerf.errors import KiloNerfError

DOMAIN = "kilonerf.domain"
"""Key of a field's :class:`Domain` in its dataclass metadata."""


class SettingError(KiloNerfError):
    """A setting's value lies outside its declared domain, or the setting does not exist."""


_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class Domain:
    """The values one setting accepts.

    ``kind`` is ``int``, ``float``, ``bool``, ``str`` or ``"schedule"`` (rows of integers);
    numeric bounds are inclusive (``ge``, ``le``) or strict (``gt``, ``lt``); NaN and infinities
    are never accepted; ``optional`` also admits None (``null``, ``none`` on the command line).
    """

    kind: Any
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    row: tuple[Domain, ...] = ()
    """For ``"schedule"``: the domain of each column of a row."""

    def describe(self) -> str:
        """The domain in words, e.g. ``an integer >= 1`` or ``a number in (0, 1]``."""
        if self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "one of " + ", ".join(self.choices or ()) if self.choices else "a string"
        elif self.kind == "schedule":
            cols = ", ".join(c.describe() for c in self.row)
            text = f"a list of [{cols}] rows with increasing first entries"
        else:
            text = ("an integer" if self.kind is int else "a finite number") + self._bounds()
        return text + (", or null" if self.optional else "")

    def _bounds(self) -> str:
        low = (self.ge, "[") if self.ge is not None else (self.gt, "(") if self.gt is not None else None
        high = (self.le, "]") if self.le is not None else (self.lt, ")") if self.lt is not None else None
        if low and high:
            return f" in {low[1]}{_num(low[0])}, {_num(high[0])}{high[1]}"
        if low:
            return f" {'>=' if low[1] == '[' else '>'} {_num(low[0])}"
        if high:
            return f" {'<=' if high[1] == ']' else '<'} {_num(high[0])}"
        return ""

    def check(self, value: Any) -> Any:
        """``value`` in the kind's canonical type (an int for a float setting becomes a float,
        a list for a schedule a tuple); ValueError when it is outside the domain."""
        if value is None:
            if self.optional:
                return None
            raise ValueError
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices is not None and value not in self.choices):
                raise ValueError
            return value
        if self.kind == "schedule":
            if not isinstance(value, (list, tuple)):
                raise ValueError
            rows = tuple(self._check_row(r) for r in value)
            if any(b[0] <= a[0] for a, b in zip(rows, rows[1:])):
                raise ValueError
            return rows
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError
        if self.kind is int:
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ValueError
        if ((self.ge is not None and not value >= self.ge) or (self.gt is not None and not value > self.gt)
                or (self.le is not None and not value <= self.le) or (self.lt is not None and not value < self.lt)):
            raise ValueError
        return value

    def _check_row(self, row: Any) -> tuple[Any, ...]:
        if not isinstance(row, (list, tuple)) or len(row) != len(self.row):
            raise ValueError
        return tuple(d.check(v) for d, v in zip(self.row, row))

    def parse(self, text: str) -> Any:
        """A command-line string as a checked value; ValueError when it is not one."""
        word = text.strip()
        if self.optional and word.lower() in ("none", "null"):
            return None
        if self.kind is bool:
            if word.lower() not in _BOOL_WORDS:
                raise ValueError
            return _BOOL_WORDS[word.lower()]
        if self.kind is str:
            return self.check(word)
        if self.kind == "schedule":
            try:
                return self.check(json.loads(word))
            except (json.JSONDecodeError, RecursionError):
                raise ValueError from None
        try:
            number: int | float = int(word) if self.kind is int else float(word)
        except (ValueError, OverflowError):
            raise ValueError from None
        return self.check(number)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def setting(
    default: Any = MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
    optional: bool = False,
    kind: Any = None,
    row: tuple[Domain, ...] = (),
) -> Any:
    """A dataclass field with ``default`` (none: a required field) and its domain; the kind is
    the default's type unless given."""
    if kind is None:
        if default is MISSING:
            raise TypeError("a required setting needs its kind")
        kind = type(default)
    domain = Domain(kind, ge=ge, gt=gt, le=le, lt=lt, choices=choices, optional=optional, row=row)
    return field(default=default, metadata={DOMAIN: domain})


def domain_of(f: Field) -> Domain:
    """The declared domain of a settings field."""
    domain = f.metadata.get(DOMAIN)
    if domain is None:
        raise TypeError(f"field '{f.name}' has no declared domain; declare it with setting()")
    return domain


class Settings:
    """Base of the stage configs (frozen dataclasses whose fields are all :func:`setting`).

    ``SECTION`` names the config in messages when it is built directly (a preset); values read
    from ``run.json`` or ``--set`` are named by the section they were given under.
    """

    SECTION: ClassVar[str] = "config"

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, check_setting(f, getattr(self, f.name), self.SECTION))

    @classmethod
    def from_dict(cls, d: Any, section: str | None = None) -> Any:
        """The config from a dict such as ``run.json`` holds; a missing field takes its default,
        an unknown key or a value outside its domain is a SettingError."""
        section = section or cls.SECTION
        if not isinstance(d, dict):
            raise SettingError(f"settings '{section}' must be a mapping of names to values, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        extra = sorted(set(d) - set(known))
        if extra:
            raise SettingError(f"unknown settings {', '.join(f'{section}.{k}' for k in extra)} "
                               f"(have: {', '.join(known)})")  # fmt: skip
        missing = [name for name, f in known.items() if name not in d and f.default is MISSING]
        if missing:
            raise SettingError(f"missing settings {', '.join(f'{section}.{k}' for k in missing)}")
        checked = {k: check_setting(known[k], v, section) for k, v in d.items()}
        return cls(**checked)

    @classmethod
    def parse(cls, name: str, text: str, section: str | None = None) -> Any:
        """The checked value of setting ``name`` from its command-line text."""
        section = section or cls.SECTION
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        if name not in known:
            raise SettingError(f"unknown setting '{section}.{name}' (have: {', '.join(known)})")
        domain = domain_of(known[name])
        try:
            return domain.parse(text)
        except ValueError:
            raise SettingError(f"setting '{section}.{name}' must be {domain.describe()}, got '{text}'") from None


def pick_preset(presets: dict[str, Any], name: str, what: str, **overrides: Any) -> Any:
    """``presets[name]`` with ``overrides`` applied (and checked); an unknown name is a
    SettingError listing the known ones."""
    if name not in presets:
        raise SettingError(f"unknown {what} preset '{name}' (have: {', '.join(presets)})")
    return replace(presets[name], **overrides)


def check_setting(f: Field, value: Any, section: str) -> Any:
    """``value`` checked against field ``f``'s domain; SettingError naming ``section.name``."""
    domain = domain_of(f)
    try:
        return domain.check(value)
    except (ValueError, TypeError, OverflowError):  # OverflowError: an integer too large for a float
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise SettingError(f"setting '{section}.{f.name}' must be {domain.describe()}, got {shown}") from None
