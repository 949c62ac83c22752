"""The chaos harness: one isolated pipeline per case, driven, waited on until quiet, measured, removed.

:func:`run_case` gives a case (see :mod:`tests.chaos.cases`) a :class:`Pipeline` of its own on a
running local stack (``renamed`` settings, ``provision`` + ``deploy_functions``, both mappings),
lets it drive records and faults, then measures every store independently of what was sent
(:func:`measure`) and checks the guarantees of DESIGN.md (:func:`check`). The pipeline is torn
down whatever happens. Every wait is bounded; every client talks to the stack on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.function_specs import MAPPING_SPECS
from deploy.local import status
from deploy.local.faults import clear_faults, set_faults
from helpers.core.indicators import crossovers
from helpers.core.layout import MANIFEST_PREFIX, PARTITION_DIR
from helpers.notebook import alerts, failures, history, verify
from helpers.pipeline import aws
from helpers.pipeline.config import Settings

_INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(_INTEGRATION) not in sys.path:  # the test-support module lives beside the integration tests
    sys.path.insert(0, str(_INTEGRATION))
from isolated_pipeline import renamed  # noqa: E402

__all__ = ["CaseResult", "Pipeline", "check", "measure", "run_case", "wait_quiescent"]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
SETTLE_SECONDS = 4.0  # stores unchanged this long once every record is committed: quiet
STALL_SECONDS = 20.0  # ... this long while records are still missing: nothing more will come
QUIESCE_TIMEOUT_SECONDS = 300.0
MAPPING_WAIT_SECONDS = 60.0
ALERT_DRAIN_ROUNDS = 20  # bound of the final inbox drain (each round ends at an empty long poll)
READ_THREADS = 8
DIFF_LIMIT = 20  # alert ids listed per difference in the report
CRASH_PATTERNS = ("Traceback (most recent call last)", "errorType", "Task timed out", "Runtime exited")


@dataclass
class Pipeline:
    """One case's pipeline: its settings, its stack's settings (faults, health) and what was sent."""

    settings: Settings
    stack: Settings
    tag: str
    records_sent: int = 0  # Kinesis records accepted (an aggregate counts once), valid and malformed
    valid_keys: set[tuple[str, str]] = field(default_factory=set)  # (symbol, timestamp) sent valid
    malformed_sent: int = 0
    malformed_expected: Counter[str] = field(default_factory=Counter)  # our own reason per record
    expect_parked: int = 0
    faults: list[dict[str, Any]] = field(default_factory=list)  # final plans with their counters
    extra: dict[str, Any] = field(default_factory=dict)  # case-specific measurements
    alert_counts: Counter[str] = field(default_factory=Counter)  # alert_id -> messages received
    _cache: dict[tuple[str, str], Any] = field(default_factory=dict)

    @property
    def glob(self) -> str:
        """A ``resource`` glob matching every resource and function of this pipeline only."""
        return f"{self.tag}-*"

    # --- faults --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def faults_on(self, spec: Mapping[str, Any]) -> Iterator[None]:
        """Faults on inside (aimed at this pipeline by the case), off after; final counters kept."""
        set_faults(self.stack, dict(spec))
        try:
            yield
        finally:
            self.faults.append(clear_faults(self.stack))

    # --- Lambda --------------------------------------------------------------------------------
    def mappings(self, function: str) -> list[dict[str, Any]]:
        lam = aws.client("lambda", self.settings)
        return list(lam.list_event_source_mappings(FunctionName=function)["EventSourceMappings"])

    def mapping_stats(self) -> dict[str, dict[str, Any]]:
        """The runtime's counters per mapping of this pipeline, by function kind."""
        health = status(self.stack).health or {}
        found = health.get("components", {}).get("lambda", {}).get("mappings", {})
        names = {"processor": self.settings.processor_function, "trend": self.settings.trend_function}
        out: dict[str, dict[str, Any]] = {}
        for uuid, stats in found.items():
            for kind, name in names.items():
                if str(stats.get("function_arn", "")).endswith(f":function:{name}"):
                    out[kind] = {"uuid": uuid, **{k: v for k, v in stats.items() if k != "shards"}}
        return out

    def worker_counters(self) -> dict[str, int]:
        """The stack's Lambda worker pool counters (invocations, cold_starts, timeouts, crashes)."""
        health = status(self.stack).health or {}
        workers = health.get("components", {}).get("lambda", {}).get("workers", {})
        return {k: int(v) for k, v in workers.items() if isinstance(v, int)}

    def recreate_processor_mapping(self, batch_size: int) -> str:
        """Delete the processor's mapping, create it again from TRIM_HORIZON with ``batch_size``."""
        lam = aws.client("lambda", self.settings)
        (old,) = self.mappings(self.settings.processor_function)
        self.extra.setdefault("mapping_stats_before_recreate", []).append(
            self.mapping_stats().get("processor")
        )
        lam.delete_event_source_mapping(UUID=old["UUID"])
        _until(lambda: not self.mappings(self.settings.processor_function), "the old mapping to go")
        destination = old["DestinationConfig"]["OnFailure"]["Destination"]
        desired = {**MAPPING_SPECS["processor"].desired(destination), "BatchSize": batch_size}
        created = lam.create_event_source_mapping(
            FunctionName=self.settings.processor_function,
            EventSourceArn=old["EventSourceArn"],
            StartingPosition="TRIM_HORIZON",
            **desired,
        )
        uuid = str(created["UUID"])
        _until(lambda: lam.get_event_source_mapping(UUID=uuid)["State"] == "Enabled", "the new mapping")
        return uuid

    def set_processor_batch_size(self, batch_size: int) -> None:
        lam = aws.client("lambda", self.settings)
        (mapping,) = self.mappings(self.settings.processor_function)
        lam.update_event_source_mapping(UUID=mapping["UUID"], BatchSize=batch_size)
        _until(
            lambda: (
                lam.get_event_source_mapping(UUID=mapping["UUID"])["BatchSize"] == batch_size
                and lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] == "Enabled"
            ),
            "the mapping update",
        )

    # --- alerts --------------------------------------------------------------------------------
    def drain_alerts(self, wait_seconds: float = 1) -> int:
        """Receive (and delete) what the inbox holds; every message counted by alert_id."""
        got = alerts.receive_alerts(self.settings, wait_seconds=wait_seconds)
        for alert in got:
            self.alert_counts[alert["alert_id"]] += 1
        for alert_id, copies in got.duplicate_ids.items():
            self.alert_counts[alert_id] += copies
        return len(got) + got.duplicates


def _until(check: Callable[[], Any], what: str, timeout: float = MAPPING_WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# --------------------------------------------------------------------------- reading the stores


def _keys(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.extend(page.get("Contents", []))
    return found


def _bodies(p: Pipeline, objects: list[dict[str, Any]]) -> list[tuple[str, bytes]]:
    """(key, body) of each object, read once per (key, ETag)."""
    s3 = aws.client("s3", p.settings)
    bucket = p.settings.raw_bucket
    wanted = [(o["Key"], o.get("ETag", "")) for o in objects]
    missing = [w for w in wanted if w not in p._cache]

    def read(w: tuple[str, str]) -> bytes:
        body: bytes = s3.get_object(Bucket=bucket, Key=w[0])["Body"].read()
        return body

    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        for w, body in zip(missing, pool.map(read, missing), strict=True):
            p._cache[w] = body
    return [(w[0], p._cache[w]) for w in wanted]


def _fingerprint(p: Pipeline) -> tuple[Any, ...]:
    """What changes while the pipeline works: stores, objects, mapping counters, queue depth."""
    s3 = aws.client("s3", p.settings)
    bucket = p.settings.raw_bucket
    objects = _keys(s3, bucket, "")
    stats = p.mapping_stats()
    counters = tuple(
        (kind, s.get("invocations"), s.get("records_ok"), s.get("records_discarded"))
        for kind, s in sorted(stats.items())
    )
    return (
        verify.dynamodb_count(p.settings),
        len(objects),
        sum(int(o["Size"]) for o in objects),
        counters,
        failures.failure_queue_depth(p.settings),
    )


def _committed(p: Pipeline) -> int:
    """Distinct sequence numbers the processor committed (accepted, quarantined or parked)."""
    m = _manifests(p)
    return len(m["accepted"]) + len(m["quarantined"]) + len(m["parked"])


def _manifests(p: Pipeline) -> dict[str, Any]:
    s3 = aws.client("s3", p.settings)
    accepted: set[tuple[str, str]] = set()
    quarantined: dict[tuple[str, str], str] = {}
    parked: set[tuple[str, str]] = set()
    for _, body in _bodies(p, _keys(s3, p.settings.raw_bucket, MANIFEST_PREFIX)):
        manifest = json.loads(body)
        shard = str(manifest.get("shard", ""))
        accepted.update((shard, str(seq)) for seq in manifest.get("accepted", []))
        quarantined.update({(shard, str(seq)): str(r) for seq, r in manifest.get("quarantined", {}).items()})
        parked.update((shard, str(seq)) for seq in manifest.get("parked", []))
    return {"accepted": accepted, "quarantined": quarantined, "parked": parked}


def wait_quiescent(
    p: Pipeline,
    expected_committed: int,
    *,
    settle: float = SETTLE_SECONDS,
    stall: float = STALL_SECONDS,
    timeout: float = QUIESCE_TIMEOUT_SECONDS,
) -> dict[str, Any]:
    """Poll until nothing changes for ``settle`` s with every record committed (``stall`` s if not).

    Alerts are drained on every poll (so a trend Lambda still publishing keeps it waiting).
    Returns how it ended: ``settled`` (quiet), ``committed`` and ``seconds``.
    """
    started = time.monotonic()
    deadline = started + timeout
    previous: tuple[Any, ...] | None = None
    quiet_since = time.monotonic()
    committed = 0
    while time.monotonic() < deadline:
        received = p.drain_alerts(wait_seconds=0)
        current = (*_fingerprint(p), received == 0)
        committed = _committed(p)
        if current != previous or received:
            previous, quiet_since = current, time.monotonic()
        needed = settle if committed >= expected_committed else stall
        if time.monotonic() - quiet_since >= needed:
            return {"settled": committed >= expected_committed, "committed": committed,
                    "seconds": round(time.monotonic() - started, 1)}  # fmt: skip
        time.sleep(POLL_SECONDS)
    return {"settled": False, "committed": committed, "seconds": round(time.monotonic() - started, 1),
            "timed_out": True}  # fmt: skip


def _crash_lines(p: Pipeline) -> int:
    """Invocation log lines of the processor that show a handler crash, timeout or runtime exit."""
    logs = aws.client("logs", p.settings)
    group = f"/aws/lambda/{p.settings.processor_function}"
    count = 0
    with contextlib.suppress(Exception):  # no log group: no invocation, no crash
        for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group):
            count += sum(any(x in e["message"] for x in CRASH_PATTERNS) for e in page.get("events", []))
    return count


def measure(p: Pipeline) -> dict[str, Any]:
    """Every number of the report, each read from its own store."""
    s, s3 = p.settings, aws.client("s3", p.settings)
    raw = _bodies(p, _keys(s3, s.raw_bucket, s.raw_prefix))
    lines: list[tuple[str, bytes]] = []
    for key, body in raw:
        match = PARTITION_DIR.search(key)
        symbol = match["symbol"] if match else ""
        lines.extend((symbol, line) for line in body.splitlines() if line.strip())
    m = _manifests(p)
    expected = {
        symbol: crossovers(history.processed_bars(s, symbol), symbol)
        for symbol in history.symbols_in_table(s)
    }
    p.drain_alerts(wait_seconds=1)
    for _ in range(ALERT_DRAIN_ROUNDS):
        if not p.drain_alerts(wait_seconds=1):
            break
    expected_ids = {signal.alert_id for signals in expected.values() for signal in signals}
    delivered_ids = set(p.alert_counts)
    stats = p.mapping_stats()
    return {
        "records_sent": p.records_sent,
        "valid_sent": len(p.valid_keys),
        "malformed_sent": p.malformed_sent,
        "items": verify.dynamodb_count(s),
        "raw_objects": len(raw),
        "raw_lines_distinct": len(set(lines)),
        "raw_lines_total": len(lines),
        "accepted": len(m["accepted"]),
        "quarantined": dict(sorted(Counter(m["quarantined"].values()).items())),
        "quarantined_expected": dict(sorted(p.malformed_expected.items())),
        "quarantined_without_reason": sum(not r for r in m["quarantined"].values()),
        "parked": failures.parked_count(s),
        "parked_in_manifests": len(m["parked"]),
        "failure_queue_depth": failures.failure_queue_depth(s),
        "alerts_expected": len(expected_ids),
        "alerts_expected_by_symbol": {sym: len(sigs) for sym, sigs in sorted(expected.items())},
        "alerts_delivered": len(delivered_ids),
        "alerts_duplicates": sum(p.alert_counts.values()) - len(delivered_ids),
        "alerts_missing": sorted(expected_ids - delivered_ids)[:DIFF_LIMIT],
        "alerts_missing_count": len(expected_ids - delivered_ids),
        "alerts_extra": sorted(delivered_ids - expected_ids)[:DIFF_LIMIT],
        "alerts_extra_count": len(delivered_ids - expected_ids),
        "processor_crash_log_lines": _crash_lines(p),
        "mappings": stats,
        "faults": [_counters(plan) for plan in p.faults],
        **p.extra,
    }


def _counters(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A cleared plan, reduced to its description and per-rule counters."""
    rules = [
        {k: v for k, v in rule.items() if k in ("service", "operation", "resource", "counters")}
        for rule in plan.get("rules", [])
    ]
    return {"description": plan.get("description", ""), "rules": rules}


def check(numbers: Mapping[str, Any], *, crashes_allowed: bool = True) -> list[str]:
    """The guarantees, each violation with its numbers (empty: every check passed)."""
    n = numbers
    bad: list[str] = []
    # Kinesis records stored twice by a producer's resend (measured from the stream by the case):
    # each is an accepted record with its own raw line, its quote one item.
    twice = int(n.get("stream_duplicates", 0))
    views = {k: n[k] for k in ("items", "raw_lines_distinct", "raw_lines_total", "accepted")}
    views["raw_lines_total"] -= twice
    views["accepted"] -= twice
    if len(set(views.values())) != 1:
        bad.append("stores disagree: " + ", ".join(f"{k}={v}" for k, v in views.items())
                   + (f" (less {twice} records stored twice)" if twice else ""))  # fmt: skip
    if views["accepted"] != n["valid_sent"] or n["items"] != n["valid_sent"]:
        bad.append(f"valid records sent={n['valid_sent']} but accepted={n['accepted']}, items={n['items']}")
    if n["parked"] != n["expect_parked"]:
        bad.append(f"parked={n['parked']}, expected {n['expect_parked']}")
    quarantined = sum(n["quarantined"].values())
    if quarantined != n["malformed_sent"]:
        bad.append(f"quarantined={quarantined} ({n['quarantined']}), malformed sent={n['malformed_sent']}")
    if n["quarantined_without_reason"]:
        bad.append(f"{n['quarantined_without_reason']} quarantined record(s) without a reason")
    if n["alerts_missing_count"] or n["alerts_extra_count"]:
        bad.append(
            f"alerts: expected {n['alerts_expected']}, delivered {n['alerts_delivered']}; "
            f"missing {n['alerts_missing_count']} {n['alerts_missing'][:5]}, "
            f"extra {n['alerts_extra_count']} {n['alerts_extra'][:5]}"
        )
    if n["failure_queue_depth"]:
        bad.append(f"failure queue holds {n['failure_queue_depth']} message(s): records given up on")
    if not crashes_allowed:
        errors = n["mappings"].get("processor", {}).get("function_errors", 0)
        if errors or n["processor_crash_log_lines"]:
            bad.append(
                f"processor crashed: function_errors={errors}, "
                f"crash log lines={n['processor_crash_log_lines']}"
            )
    bad.extend(n.get("case_violations", []))
    return bad


# --------------------------------------------------------------------------- one case


@dataclass
class CaseResult:
    name: str
    size: str
    report: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.report.get("ok"))


_TAG = re.compile(r"-quotes$")


def run_case(
    stack: Settings,
    name: str,
    drive: Callable[[Pipeline, str], None],
    size: str,
    *,
    build_dir: Path,
    prepare: Callable[[Settings], None] | None = None,
    crashes_allowed: bool = True,
) -> CaseResult:
    """Provision and deploy a pipeline of the case's own, ``drive`` it, measure, check, tear down."""
    from deploy.functions import deploy_functions
    from deploy.provision import provision, teardown

    started = time.monotonic()
    settings = renamed(stack, f"chaos-{name.replace('_', '-')}")
    p = Pipeline(settings, stack, _TAG.sub("", settings.stream_name))
    report: dict[str, Any] = {"case": name, "size": size}
    try:
        if prepare is not None:
            prepare(settings)
        provision(settings)
        deploy_functions(settings, build_dir=build_dir)
        report["setup_seconds"] = round(time.monotonic() - started, 1)
        drive(p, size)
        numbers = measure(p)
        numbers["expect_parked"] = p.expect_parked
        violations = check(numbers, crashes_allowed=crashes_allowed)
        report.update(numbers, ok=not violations, violations=violations)
    except Exception as err:  # a case that cannot finish is a failed case, with its reason
        log.exception("case %s failed to run", name)
        report.update(
            ok=False,
            violations=[f"case did not finish: {type(err).__name__}: {err}"],
            error=traceback.format_exc(limit=8),
            faults=[_counters(f) for f in p.faults],
        )
        with contextlib.suppress(Exception):
            clear_faults(stack)
    finally:
        with contextlib.suppress(Exception):
            teardown(settings)
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    return CaseResult(name, size, report)
