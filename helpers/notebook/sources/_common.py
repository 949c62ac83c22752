"""Argument checks shared by the sources: symbol lists and time bounds."""

from __future__ import annotations

import re
from collections.abc import Sequence

from helpers.core.errors import SourceError
from helpers.core.quotes import SYMBOL_PATTERN, canonical_timestamp

__all__ = ["bound", "symbol_list"]

_SYMBOL = re.compile(SYMBOL_PATTERN)
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)


def bound(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and _DATE_ONLY.fullmatch(value):
        value = f"{value}T00:00:00Z"
    try:
        return canonical_timestamp(value)
    except ValueError as err:
        raise SourceError(f"{name}={value!r} is not a date or timestamp: {err}") from err


def symbol_list(symbols: Sequence[str] | str) -> list[str]:
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    bad = [s for s in names if not isinstance(s, str) or _SYMBOL.fullmatch(s) is None]
    if not names or bad:
        raise SourceError(f"symbols {bad or names!r} must be a non-empty list matching {SYMBOL_PATTERN}")
    if len(set(names)) != len(names):
        raise SourceError(f"symbols {names!r} contain duplicates")
    return names
