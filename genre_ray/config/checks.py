"""The value checkers behind :mod:`genre_ray.config`: numbers, strings, flags, distributions.

Private to the config: each checker returns the cleaned value or raises ``_Bad(rule)``, and
:func:`_err` turns that into the one-line :class:`ConfigError` the user sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genre_ray.models.spec import Flag, Float, Int, OneOf, Rule

DIST_KINDS = ("uniform", "loguniform", "int", "choice")


class ConfigError(ValueError):
    """A search space file that cannot be run. The message names file, key, rule and value."""


@dataclass(frozen=True)
class Dist:
    """A searchable value: ``kind`` is one of uniform, loguniform, int, choice."""

    kind: str
    args: tuple[Any, ...]


_UNSET = object()


class _Bad(Exception):
    def __init__(self, rule: str, value: Any = _UNSET, key: str = "") -> None:
        super().__init__(rule)
        self.rule = rule
        self.value = value  # the offending element, when it is part of the value
        self.key = key  # the offending entry's key below the checked one (``rock`` of ``merge.rock``)


Checker = Callable[[Any], Any]


def _type_name(v: Any) -> str:
    return type(v).__name__


def _num(lo: float | None = None, hi: float | None = None, *, integer: bool = False,
         lo_open: bool = False, hi_open: bool = False) -> Checker:
    def check(v: Any) -> Any:
        kind = "an integer" if integer else "a number"
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)):
            raise _Bad(f"must be {kind}")
        if v != v:  # NaN
            raise _Bad(f"must be {kind}")
        below = lo is not None and (v <= lo if lo_open else v < lo)
        above = hi is not None and (v >= hi if hi_open else v > hi)
        if below or above:
            left = "(" if lo_open else "["
            right = ")" if hi_open else "]"
            lo_s = "-inf" if lo is None else f"{lo:g}"
            hi_s = "inf" if hi is None else f"{hi:g}"
            raise _Bad(f"must be in {left}{lo_s}, {hi_s}{right}")
        return int(v) if integer else float(v)

    return check


def _str(choices: tuple[str, ...] | None = None, *, optional: bool = False) -> Checker:
    def check(v: Any) -> Any:
        if v is None and optional:
            return None
        if not isinstance(v, str) or not v:
            raise _Bad("must be a non-empty string" + (" or null" if optional else ""))
        if choices is not None and v not in choices:
            raise _Bad(f"must be one of {', '.join(choices)}")
        return v

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad("must be true or false")
    return v


def _optional(inner: Checker) -> Checker:
    def check(v: Any) -> Any:
        return None if v is None else inner(v)

    return check


def _searchable(inner: Checker) -> Checker:
    """Accept a plain value (checked by ``inner``) or a distribution over such values."""

    def check(v: Any) -> Any:
        if isinstance(v, dict):
            return _dist(v, inner)
        return inner(v)

    check.searchable = True  # type: ignore[attr-defined]
    return check


def _dist(v: dict[str, Any], inner: Checker) -> Dist:
    if len(v) != 1 or next(iter(v)) not in DIST_KINDS:
        raise _Bad(f"a searchable value must be one of {{{': [...]}, {'.join(DIST_KINDS)}: [...]}}")
    kind, args = next(iter(v.items()))
    if not isinstance(args, list) or not args:
        raise _Bad(f"{kind}: must be a non-empty list")

    def each(a: Any) -> Any:
        try:
            return inner(a)
        except _Bad as bad:
            raise _Bad(f"{kind}: {bad.rule}", a) from None

    if kind == "choice":
        return Dist(kind, tuple(each(a) for a in args))
    if len(args) != 2:
        raise _Bad(f"{kind}: must be [low, high]")
    lo, hi = (each(a) for a in args)
    if isinstance(lo, bool) or not isinstance(lo, (int, float)):
        raise _Bad(f"{kind}: is only for numbers")
    if kind == "int" and not (isinstance(args[0], int) and isinstance(args[1], int)):
        raise _Bad("int: low and high must be integers")
    if lo >= hi:
        raise _Bad(f"{kind}: low < high must hold", args)
    if kind == "loguniform" and lo <= 0:
        raise _Bad("loguniform: low must be > 0")
    return Dist(kind, (lo, hi))


def _str_list(v: Any) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise _Bad("must be a non-empty list of strings")
    return list(v)


def _err(file: str, key: str, rule: str, value: Any) -> ConfigError:
    shown = repr(value) if isinstance(value, str) else value
    return ConfigError(f"{file}: {key}: {rule}, got {shown}")


def from_rule(rule: Rule) -> Checker:
    """The checker of a model hyperparameter's rule (:mod:`genre_ray.models.spec`)."""
    if isinstance(rule, Int):
        return _num(rule.lo, rule.hi, integer=True)
    if isinstance(rule, Float):
        return _num(rule.lo, rule.hi, lo_open=rule.lo_open, hi_open=rule.hi_open)
    if isinstance(rule, OneOf):
        return _str(rule.choices)
    if isinstance(rule, Flag):
        return _bool
    raise TypeError(f"unknown rule {rule!r}")
