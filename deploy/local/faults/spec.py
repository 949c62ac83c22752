"""A fault plan: the validated JSON spec, its rules, their seeded draws and counters.

The spec format is documented in :mod:`deploy.local.faults`. :func:`parse_plan` refuses anything
it does not understand with a :class:`FaultSpecError` naming the field (``rules[2].error.rate``),
the value and the fix. Each :class:`Rule` draws from its own ``random.Random`` seeded with
``"<plan seed>:<rule index>"``, so adding a rule never shifts another rule's draws and the same
request sequence gets the same faults. Draws and counters are taken under the rule's lock
(requests arrive on many threads).
"""

from __future__ import annotations

import fnmatch
import functools
import random
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deploy.local.faults.wire import ENTRY_ERRORS, ERRORS, S3_OPERATIONS, SERVICES, Call
from helpers.core.errors import LocalStackError

PLAN_KEYS = {"seed", "internal", "description", "rules"}
RULE_KEYS = {"service", "operation", "resource", "key_prefix", "key_contains", "description"}
ACTIONS = {"error", "entry_error", "unprocessed", "latency", "kill"}
COUNTERS = ("seen", "errors", "failed_entries", "unprocessed_items", "delayed", "latency_ms", "kills")
MAX_LATENCY_MS = 60_000


class FaultSpecError(LocalStackError, ValueError):
    """A fault spec the injector refuses: names the field, the value and the fix."""

    def __init__(self, field: str, value: object, problem: str, fix: str) -> None:
        self.field = field
        super().__init__(f"fault spec {field}={value!r}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class Action:
    """One kind of fault a rule injects: with probability ``rate``, at most ``max`` times."""

    kind: str
    rate: float
    max: int | None = None
    code: str = ""
    status: int = 0
    message: str = ""
    ms: tuple[float, float] = (0.0, 0.0)  # latency, or the kill delay after the invocation starts


@functools.lru_cache(maxsize=8)
def _operations(service: str) -> frozenset[str]:
    if service == "s3":
        return S3_OPERATIONS
    from botocore.loaders import Loader

    return frozenset(Loader().load_service_model(service, "service-2")["operations"])


def _strings(where: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise FaultSpecError(where, value, "expected a non-empty string or list of strings", 'e.g. "st-*"')
    return tuple(items)


def _number(where: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise FaultSpecError(where, value, f"expected a number from {low:g} to {high:g}", "change the value")
    return float(value)


def _ms_range(where: str, value: Any) -> tuple[float, float]:
    if isinstance(value, list) and len(value) == 2:
        low = _number(f"{where}[0]", value[0], 0, MAX_LATENCY_MS)
        high = _number(f"{where}[1]", value[1], 0, MAX_LATENCY_MS)
        if low > high:
            raise FaultSpecError(where, value, "the range's minimum exceeds its maximum", "write [min, max]")
        return low, high
    if isinstance(value, list):
        raise FaultSpecError(where, value, "expected milliseconds or [min, max]", "e.g. [10, 50]")
    single = _number(where, value, 0, MAX_LATENCY_MS)
    return single, single


def _action(where: str, kind: str, spec: Any, service: str, operations: frozenset[str] | None) -> Action:
    allowed = {"rate", "max"} | {
        "error": {"code", "status", "message"},
        "entry_error": {"code"},
        "unprocessed": set(),
        "latency": {"ms"},
        "kill": {"delay_ms"},
    }[kind]
    if kind == "latency" and isinstance(spec, int | float | list) and not isinstance(spec, bool):
        spec = {"ms": spec}
    if not isinstance(spec, dict):
        raise FaultSpecError(
            where, spec, "expected an object", f'e.g. {{"rate": 0.2}}; keys: {sorted(allowed)}'
        )
    unknown = set(spec) - allowed
    if unknown:
        raise FaultSpecError(
            f"{where}.{sorted(unknown)[0]}", spec[sorted(unknown)[0]], "unknown key", f"use {sorted(allowed)}"
        )
    rate = _number(f"{where}.rate", spec.get("rate", 1.0), 0, 1)
    cap = spec.get("max")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
        raise FaultSpecError(f"{where}.max", cap, "expected a whole number >= 0", "e.g. 10, or leave it out")
    needs = {
        "error": ("kinesis", "dynamodb", "s3", "sqs", "sns"),
        "entry_error": ("kinesis",),
        "unprocessed": ("dynamodb",),
        "latency": ("kinesis", "dynamodb", "s3", "sqs", "sns"),
        "kill": ("lambda",),
    }[kind]
    if service not in needs:
        raise FaultSpecError(
            where, spec, f"{kind!r} does not apply to service {service!r}", f"use it with {list(needs)}"
        )
    only = {"entry_error": "PutRecords", "unprocessed": "BatchWriteItem"}.get(kind)
    if only and operations != frozenset({only}):
        raise FaultSpecError(where, spec, f"{kind!r} applies to {only} only", f'set "operation": "{only}"')
    if kind == "error":
        return _error_action(where, spec, service, rate, cap)
    if kind == "entry_error":
        code = spec.get("code", "ProvisionedThroughputExceededException")
        if code not in ENTRY_ERRORS:
            raise FaultSpecError(
                f"{where}.code",
                code,
                "not an error code of a PutRecords entry",
                f"use {sorted(ENTRY_ERRORS)}",
            )
        return Action(kind, rate, cap, code=code, message=ENTRY_ERRORS[code])
    if kind == "latency":
        if "ms" not in spec:
            raise FaultSpecError(f"{where}.ms", None, "missing", 'e.g. "ms": 50 or [10, 100]')
        return Action(kind, rate, cap, ms=_ms_range(f"{where}.ms", spec["ms"]))
    if kind == "kill":
        return Action(kind, rate, cap, ms=_ms_range(f"{where}.delay_ms", spec.get("delay_ms", 0)))
    return Action(kind, rate, cap)


def _error_action(where: str, spec: dict[str, Any], service: str, rate: float, cap: int | None) -> Action:
    known = ERRORS[service]
    code = spec.get("code")
    if not isinstance(code, str) or (not code.isidentifier() and "." not in code):
        raise FaultSpecError(
            f"{where}.code", code, "missing or not an error code", f"use one of {sorted(known)}"
        )
    status = spec.get("status", known.get(code, (0, ""))[0])
    if code not in known and "status" not in spec:
        raise FaultSpecError(
            f"{where}.code",
            code,
            f"not an error code the injector knows for {service}",
            f'use one of {sorted(known)}, or give "status" too',
        )
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise FaultSpecError(f"{where}.status", status, "expected an HTTP error status 400-599", "e.g. 503")
    message = spec.get("message", known.get(code, (0, code))[1])
    if not isinstance(message, str):
        raise FaultSpecError(
            f"{where}.message", message, "expected a string", "write the message AWS would send"
        )
    return Action("error", rate, cap, code=code, status=status, message=message)


@dataclass
class Rule:
    """Which calls a rule applies to, what it does to them, its draws and its counters."""

    index: int
    service: str
    spec: dict[str, Any]
    operations: frozenset[str] | None = None
    resources: tuple[str, ...] | None = None
    key_prefix: str | None = None
    key_contains: str | None = None
    actions: dict[str, Action] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random, repr=False)
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def applies_to(self, name: str) -> bool:
        return self.resources is None or any(fnmatch.fnmatchcase(name, pattern) for pattern in self.resources)

    def matches(self, call: Call) -> bool:
        """True if ``call`` is one of this rule's (service, operation, resource, key filter)."""
        if call.service != self.service or (
            self.operations is not None and call.operation not in self.operations
        ):
            return False
        if self.resources is not None and not any(self.applies_to(name) for name in call.resources):
            return False
        if self.key_prefix is not None or self.key_contains is not None:
            key = call.key
            if (
                key is None
                or not key.startswith(self.key_prefix or "")
                or (self.key_contains or "") not in key
            ):
                return False
        return True

    def draw(self, kind: str, counter: str, amount: int = 1) -> bool:
        """One seeded draw for ``kind``: True (and ``counter`` += amount) if the fault fires."""
        action = self.actions.get(kind)
        if action is None:
            return False
        with self.lock:
            fired = self.rng.random() < action.rate
            if fired and action.max is not None and self.counters[counter] + amount > action.max:
                fired = False
            if fired:
                self.counters[counter] += amount
            return fired

    def span_ms(self, kind: str) -> float:
        """A seeded draw from the action's millisecond range (latency, kill delay)."""
        low, high = self.actions[kind].ms
        with self.lock:
            return low if low == high else self.rng.uniform(low, high)

    def count(self, counter: str, amount: float = 1) -> None:
        with self.lock:
            self.counters[counter] += amount

    def describe(self) -> dict[str, Any]:
        with self.lock:
            counters = {k: round(v, 1) if k == "latency_ms" else int(v) for k, v in self.counters.items()}
        return {**self.spec, "counters": counters}


@dataclass
class Plan:
    """A validated fault spec: its rules in order, the seed and whether stack requests count."""

    seed: int
    rules: list[Rule]
    internal: bool = False
    description: str = ""
    services: frozenset[str] = frozenset()
    kill_rules: tuple[Rule, ...] = ()

    def for_call(self, call: Call) -> list[Rule]:
        return [rule for rule in self.rules if rule.matches(call)]

    def describe(self) -> dict[str, Any]:
        head = {"active": True, "seed": self.seed, "internal": self.internal}
        return (
            head
            | ({"description": self.description} if self.description else {})
            | {"rules": [rule.describe() for rule in self.rules]}
        )


def parse_plan(spec: Mapping[str, Any]) -> Plan:
    """Validate a fault spec (see :mod:`deploy.local.faults`) into a fresh :class:`Plan`."""
    if not isinstance(spec, Mapping):
        raise FaultSpecError("spec", spec, "expected a JSON object", 'write {"seed": 1, "rules": [...]}')
    unknown = set(spec) - PLAN_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise FaultSpecError(key, spec[key], "unknown key", f"use {sorted(PLAN_KEYS)}")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FaultSpecError("seed", seed, "expected a whole number", "e.g. 7")
    internal = spec.get("internal", False)
    if not isinstance(internal, bool):
        raise FaultSpecError("internal", internal, "expected true or false", "leave it out (false)")
    description = spec.get("description", "")
    if not isinstance(description, str):
        raise FaultSpecError("description", description, "expected a string", "describe the plan in words")
    rules_spec = spec.get("rules")
    if not isinstance(rules_spec, list):
        raise FaultSpecError(
            "rules", rules_spec, "expected a list of rules", 'write "rules": [{"service": ...}]'
        )
    rules = [_rule(i, r, seed) for i, r in enumerate(rules_spec)]
    services = frozenset(r.service for r in rules if r.service != "lambda")
    kills = tuple(r for r in rules if r.service == "lambda")
    return Plan(seed, rules, internal, description, services, kills)


def _rule(index: int, spec: Any, seed: int) -> Rule:
    where = f"rules[{index}]"
    if not isinstance(spec, dict):
        raise FaultSpecError(where, spec, "expected an object", 'e.g. {"service": "s3", "error": {...}}')
    unknown = set(spec) - RULE_KEYS - ACTIONS
    if unknown:
        key = sorted(unknown)[0]
        raise FaultSpecError(f"{where}.{key}", spec[key], "unknown key", f"use {sorted(RULE_KEYS | ACTIONS)}")
    service = spec.get("service")
    if service not in SERVICES:
        raise FaultSpecError(
            f"{where}.service", service, "not a service the injector covers", f"use one of {list(SERVICES)}"
        )
    operations: frozenset[str] | None = None
    if "operation" in spec:
        if service == "lambda":
            raise FaultSpecError(
                f"{where}.operation",
                spec["operation"],
                "lambda rules act on every invocation",
                "leave operation out",
            )
        names = _strings(f"{where}.operation", spec["operation"])
        if "*" not in names:
            bad = [n for n in names if n not in _operations(service)]
            if bad:
                raise FaultSpecError(
                    f"{where}.operation",
                    bad[0],
                    f"not an operation of {service}",
                    "use the API name as in botocore, e.g. PutRecords, BatchWriteItem, PutObject",
                )
            operations = frozenset(names)
    resources = _strings(f"{where}.resource", spec["resource"]) if "resource" in spec else None
    keys: dict[str, str] = {}
    for name in ("key_prefix", "key_contains"):
        if name in spec:
            if service != "s3":
                raise FaultSpecError(
                    f"{where}.{name}", spec[name], "key filters apply to S3 only", "aim with resource instead"
                )
            if not isinstance(spec[name], str) or not spec[name]:
                raise FaultSpecError(
                    f"{where}.{name}", spec[name], "expected a non-empty string", 'e.g. "symbol=BAD/"'
                )
            keys[name] = spec[name]
    actions = {
        kind: _action(f"{where}.{kind}", kind, spec[kind], service, operations)
        for kind in ACTIONS
        if kind in spec
    }
    if not actions:
        raise FaultSpecError(where, spec, "no fault in the rule", f"add one of {sorted(ACTIONS)}")
    rule = Rule(
        index, service, dict(spec), operations, resources, keys.get("key_prefix"), keys.get("key_contains")
    )
    rule.actions = actions
    rule.rng = random.Random(f"{seed}:{index}")
    return rule
