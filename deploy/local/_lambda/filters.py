"""Event filtering of stream mappings (``FilterCriteria``), as Lambda applies it before batching.

A record is delivered when it matches any of the mapping's filters (at most 5); the others are
dropped and their checkpoint moves on, so they never count towards ``BatchSize``. A pattern is a
JSON object mirroring the record: nested objects narrow the field, a list at a leaf holds the
accepted values, ORed. Supported, as in Lambda's filter rule syntax: literal strings, numbers,
booleans and null; ``{"exists": bool}``; ``{"prefix": s}``; ``{"suffix": s}``;
``{"equals-ignore-case": s}``; ``{"anything-but": value | [values] | {"prefix": s}}``;
``{"numeric": [op, n, (op, n)]}`` with ``=`` ``<`` ``<=`` ``>`` ``>=``.

What a pattern is matched against: a DynamoDB stream record as delivered (``eventName``,
``dynamodb.NewImage``...); for Kinesis the ``kinesis`` object's fields (``partitionKey``,
``sequenceNumber``...) with ``data`` decoded from base64 and parsed as JSON (data that is not
JSON matches no ``data`` pattern). Aggregated records (several quotes as a JSON text sequence)
are not JSON: filter Kinesis on metadata only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["FilterError", "compile_filters"]

MAX_FILTERS = 5
_ABSENT = object()
_RULES = ("exists", "prefix", "suffix", "equals-ignore-case", "anything-but", "numeric")
_NUMERIC = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


class FilterError(ValueError):
    """A FilterCriteria the local runtime cannot apply; the message says which part."""


Matcher = Callable[[Mapping[str, Any]], bool]


def compile_filters(criteria: Any, source_kind: str) -> Matcher | None:
    """A record predicate for ``FilterCriteria`` (None: no filters, deliver everything)."""
    filters = (criteria or {}).get("Filters") or [] if isinstance(criteria, Mapping) else []
    if not filters:
        return None
    if len(filters) > MAX_FILTERS:
        raise FilterError(f"{len(filters)} filters: a mapping takes at most {MAX_FILTERS}")
    patterns = []
    for f in filters:
        try:
            pattern = json.loads(f.get("Pattern") or "{}")
        except json.JSONDecodeError as err:
            raise FilterError(f"filter pattern is not JSON: {err}") from err
        if not isinstance(pattern, dict):
            raise FilterError("a filter pattern must be a JSON object")
        _check(pattern)
        patterns.append(pattern)

    def matches(record: Mapping[str, Any]) -> bool:
        target = _kinesis_target(record) if source_kind == "kinesis" else record
        return any(_object(pattern, target) for pattern in patterns)

    return matches


def _kinesis_target(record: Mapping[str, Any]) -> dict[str, Any]:
    kinesis = dict(record.get("kinesis") or {})
    try:
        kinesis["data"] = json.loads(base64.b64decode(kinesis.get("data") or "", validate=True))
    except (binascii.Error, ValueError, TypeError):
        kinesis["data"] = _ABSENT
    return kinesis


def _check(pattern: Mapping[str, Any]) -> None:
    for key, rule in pattern.items():
        if isinstance(rule, dict):
            _check(rule)
        elif isinstance(rule, list):
            for condition in rule:
                if isinstance(condition, dict):
                    (name,) = condition.keys() if len(condition) == 1 else (None,)
                    if name not in _RULES:
                        raise FilterError(f"unsupported filter rule {condition!r} at {key!r}")
                    if name == "numeric":
                        _numeric_pairs(condition["numeric"])
        else:
            raise FilterError(f"filter value at {key!r} must be an object or a list, not {rule!r}")


def _object(pattern: Mapping[str, Any], value: Any) -> bool:
    for key, rule in pattern.items():
        field = value.get(key, _ABSENT) if isinstance(value, Mapping) else _ABSENT
        if isinstance(rule, dict):
            if not isinstance(field, Mapping) or not _object(rule, field):
                return False
        elif not any(_leaf(condition, field) for condition in rule):
            return False
    return True


def _leaf(condition: Any, value: Any) -> bool:
    if not isinstance(condition, dict):
        return value is not _ABSENT and not isinstance(value, dict | list) and _same(condition, value)
    ((name, arg),) = condition.items()
    if name == "exists":
        return (value is not _ABSENT) == bool(arg)
    if value is _ABSENT or isinstance(value, dict | list):
        return False
    if name == "prefix":
        return isinstance(value, str) and value.startswith(arg)
    if name == "suffix":
        return isinstance(value, str) and value.endswith(arg)
    if name == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == str(arg).lower()
    if name == "anything-but":
        if isinstance(arg, dict) and "prefix" in arg:
            return not (isinstance(value, str) and value.startswith(arg["prefix"]))
        values = arg if isinstance(arg, list) else [arg]
        return not any(_same(v, value) for v in values)
    number = _number(value)
    return number is not None and all(_NUMERIC[op](number, n) for op, n in _numeric_pairs(arg))


def _same(expected: Any, value: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool) or expected is None or value is None:
        return expected is value or (expected == value and type(expected) is type(value))
    if isinstance(expected, int | float):
        return _number(value) == expected
    return bool(expected == value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:  # DynamoDB numbers arrive as strings ({"N": "12.5"})
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _numeric_pairs(arg: Any) -> list[tuple[str, float]]:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        raise FilterError(f"numeric rule {arg!r}: [op, n] or [op, n, op, n]")
    pairs = [(arg[i], arg[i + 1]) for i in range(0, len(arg), 2)]
    for op, n in pairs:
        if op not in _NUMERIC or isinstance(n, bool) or not isinstance(n, int | float):
            raise FilterError(f"numeric rule {arg!r}: operators {sorted(_NUMERIC)}, numbers")
    return pairs
