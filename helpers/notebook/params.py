"""Check a notebook's parameters in the cell after its parameters cell, before any AWS call.

``check(globals(), RULES)`` refuses the first bad value with one :class:`ParameterError`
naming the parameter, the value and the fix, so ``COUNT=-1`` or ``SOURCE="synth"`` stop at
once instead of failing deep in the producer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from helpers.core.errors import ParameterError

__all__ = ["Rule", "check", "choice", "flag", "number", "text"]


@dataclass(frozen=True)
class Rule:
    """What one parameter may be: ``kind`` (``number``, ``choice``, ``flag``, ``text``)."""

    kind: str
    optional: bool = True
    minimum: float | None = None
    integer: bool = False
    choices: tuple[Any, ...] = ()
    hint: str = ""


def number(
    *, minimum: float | None = 0, integer: bool = False, optional: bool = True, hint: str = ""
) -> Rule:
    """A number (int, or float unless ``integer``) at least ``minimum``; ``None`` if ``optional``."""
    return Rule("number", optional, minimum, integer, (), hint)


def choice(choices: Iterable[Any], *, optional: bool = False, hint: str = "") -> Rule:
    """One of ``choices`` (e.g. ``list(sources.SOURCES)``)."""
    return Rule("choice", optional, choices=tuple(choices), hint=hint)


def flag(*, optional: bool = False) -> Rule:
    """True or False."""
    return Rule("flag", optional)


def text(*, optional: bool = True) -> Rule:
    """A string (a path, a name)."""
    return Rule("text", optional)


def _refuse(name: str, value: Any, problem: str, fix: str) -> ParameterError:
    return ParameterError(f"parameter {name}={value!r}: {problem}. Fix: {fix}")


def _check_one(name: str, value: Any, rule: Rule) -> None:
    hint = f" ({rule.hint})" if rule.hint else ""
    if value is None:
        if rule.optional or None in rule.choices:
            return
        raise _refuse(name, value, "must be set", f"give {name} a value{hint}")
    if rule.kind == "number":
        kind = "an integer" if rule.integer else "a number"
        if isinstance(value, bool) or not isinstance(value, int if rule.integer else (int, float)):
            raise _refuse(
                name, value, f"must be {kind}, not {type(value).__name__}", f"set {name} to {kind}{hint}"
            )
        if isinstance(value, float) and math.isnan(value):
            raise _refuse(name, value, "is not a number", f"set {name} to {kind}{hint}")
        if rule.minimum is not None and value < rule.minimum:
            raise _refuse(
                name,
                value,
                f"must be at least {rule.minimum:g}",
                f"set {name} to {rule.minimum:g} or more{hint}",
            )
    elif rule.kind == "choice":
        if value not in rule.choices:
            raise _refuse(name, value, "is not known", f"use one of {list(rule.choices)}{hint}")
    elif rule.kind == "flag":
        if not isinstance(value, bool):
            raise _refuse(
                name,
                value,
                f"must be True or False, not {type(value).__name__}",
                f"set {name} = True or False",
            )
    elif rule.kind == "text" and not isinstance(value, str):
        raise _refuse(
            name, value, f"must be a string, not {type(value).__name__}", f"set {name} to a string{hint}"
        )


def check(values: Mapping[str, Any], rules: Mapping[str, Rule]) -> dict[str, Any]:
    """Check each parameter named in ``rules`` in ``values`` (a notebook's ``globals()`` or a dict).

    Raises :class:`ParameterError` for the first parameter missing from ``values`` or out of its
    rule; returns the checked parameters.
    """
    checked: dict[str, Any] = {}
    for name, rule in rules.items():
        if name not in values:
            raise _refuse(name, None, "is not defined", "run the parameters cell first (or pass it with -p)")
        _check_one(name, values[name], rule)
        checked[name] = values[name]
    return checked
