"""Identity-based policy evaluation, as IAM does it for one principal, action and resource.

moto ships an evaluator (``moto/iam/access_control.py``), but it is written for action checks:
moto's services hand it the resource ``*`` (only S3, SQS, IAM roles and ``sts:AssumeRole`` pass
an ARN), so a statement scoped to an ARN never matches there, and an ``Allow`` whose condition
is not met counts as an explicit deny. This one follows IAM's rules for what the pipeline's
policies use:

* a request is allowed when some ``Allow`` statement matches it and no ``Deny`` does
  (explicit deny wins; nothing matching is an implicit deny);
* ``Action``/``NotAction`` match case-insensitively, ``Resource``/``NotResource``
  case-sensitively, both with the ``*`` and ``?`` wildcards;
* ``Condition``: every operator block must hold, every key in it, any of a key's values
  (``String*``, ``Arn*``, ``Bool``, ``Null``, with ``...IfExists``); a key the request does not
  carry fails the block (IfExists: passes it); an operator this module does not know fails it,
  so an unknown condition never grants anything.

Pure: no moto, no I/O. Documents are parsed once per distinct text.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ALLOWED", "EXPLICIT_DENY", "IMPLICIT_DENY", "Decision", "evaluate", "parse"]

ALLOWED = "allowed"
EXPLICIT_DENY = "explicit deny"
IMPLICIT_DENY = "implicit deny"


@dataclass(frozen=True)
class Decision:
    outcome: str  # ALLOWED, EXPLICIT_DENY or IMPLICIT_DENY
    resource: str = ""  # the first resource that was not allowed

    @property
    def allowed(self) -> bool:
        return self.outcome == ALLOWED


@functools.lru_cache(maxsize=256)
def parse(document: str) -> tuple[dict[str, Any], ...]:
    """The statements of a policy document (JSON text), as a tuple; bad documents have none."""
    try:
        doc = json.loads(document)
    except ValueError:
        return ()
    statements = doc.get("Statement", []) if isinstance(doc, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    return tuple(s for s in statements if isinstance(s, dict))


@functools.lru_cache(maxsize=4096)
def _pattern(text: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _values(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [] if value is None else [str(value)]


def _matches(patterns: Any, value: str, *, ignore_case: bool) -> bool:
    return any(_pattern(p, ignore_case).fullmatch(value) for p in _values(patterns))


def _string_test(operator: str) -> Any:
    like = operator.endswith("Like")
    ignore_case = "IgnoreCase" in operator

    def test(expected: str, actual: str) -> bool:
        if like:
            return _pattern(expected, False).fullmatch(actual) is not None
        return expected.lower() == actual.lower() if ignore_case else expected == actual

    return test


_TESTS = {
    "StringEquals": _string_test("StringEquals"),
    "StringEqualsIgnoreCase": _string_test("StringEqualsIgnoreCase"),
    "StringLike": _string_test("StringLike"),
    "ArnEquals": _string_test("StringEquals"),
    "ArnLike": _string_test("StringLike"),
    "Bool": lambda expected, actual: expected.lower() == actual.lower(),
}
_NEGATED = {
    "StringNotEquals": "StringEquals",
    "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringNotLike": "StringLike",
    "ArnNotEquals": "ArnEquals",
    "ArnNotLike": "ArnLike",
}


def _condition_holds(conditions: Any, context: Mapping[str, str]) -> bool:
    if not conditions:
        return True
    if not isinstance(conditions, dict):
        return False
    lowered = {k.lower(): v for k, v in context.items()}  # condition keys are case-insensitive
    for operator, block in conditions.items():
        if not isinstance(block, dict):
            return False
        if_exists = operator.endswith("IfExists")
        name = operator.removesuffix("IfExists")
        for key, expected in block.items():
            actual = lowered.get(key.lower())
            if name == "Null":
                if (actual is None) != (_values(expected)[:1] == ["true"]):
                    return False
                continue
            if actual is None:
                if if_exists:
                    continue
                return False
            negated = name in _NEGATED
            test = _TESTS.get(_NEGATED.get(name, name))
            if test is None:
                return False
            hit = any(test(e, actual) for e in _values(expected))
            if hit == negated:
                return False
    return True


def _statement(
    statement: Mapping[str, Any], action: str, resource: str, context: Mapping[str, str]
) -> str | None:
    """``Allow``/``Deny`` when the statement applies to the request, else None."""
    if "NotAction" in statement:
        if _matches(statement["NotAction"], action, ignore_case=True):
            return None
    elif not _matches(statement.get("Action"), action, ignore_case=True):
        return None
    if "NotResource" in statement:
        if _matches(statement["NotResource"], resource, ignore_case=False):
            return None
    elif not _matches(statement.get("Resource"), resource, ignore_case=False):
        return None
    if not _condition_holds(statement.get("Condition"), context):
        return None
    effect = statement.get("Effect")
    return effect if effect in ("Allow", "Deny") else None


def evaluate(
    documents: Iterable[str], action: str, resources: Iterable[str], context: Mapping[str, str] | None = None
) -> Decision:
    """Whether identity policies ``documents`` allow ``action`` on every one of ``resources``."""
    statements = [s for doc in documents for s in parse(doc)]
    ctx = context or {}
    for resource in resources:
        allowed = False
        for statement in statements:
            effect = _statement(statement, action, resource, ctx)
            if effect == "Deny":
                return Decision(EXPLICIT_DENY, resource)
            allowed = allowed or effect == "Allow"
        if not allowed:
            return Decision(IMPLICIT_DENY, resource)
    return Decision(ALLOWED)
