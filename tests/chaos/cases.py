"""The fault matrix: seven cases, each a driver run on a pipeline of its own (see :mod:`tests.chaos`).

A driver sends records, applies faults aimed at its own pipeline (``p.glob``), waits until the
pipeline is quiet (:func:`~tests.chaos.harness.wait_quiescent`) and records what the checks need
(``p.valid_keys``, ``p.malformed_sent``, ``p.expect_parked``, ``p.extra``). Sizes: ``full`` (the
matrix of the issue, under 10 minutes on two cores) and ``small`` (every case, tiny).
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from deploy.local import status, up
from deploy.local.faults import get_faults
from helpers.core.errors import ProducerError
from helpers.core.quotes import Quote
from helpers.notebook import failures, verify
from helpers.notebook.producer import (
    AGGREGATE_QUOTES,
    MAX_RECORDS_PER_PUT,
    malformed_records,
    produce,
    put_raw,
)
from helpers.notebook.sources import synthetic
from helpers.pipeline import aws
from helpers.pipeline.config import Settings
from tests.chaos.harness import Pipeline, _until, wait_quiescent

__all__ = ["CASES", "SIZES", "Case"]

SEED = 20260729
REDRIVE_WAIT_SECONDS = 180.0

SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "redelivery": {
        "full": {"records": 1500, "symbols": 4, "first": 25, "again": [5000, 10, 300]},
        "small": {"records": 240, "symbols": 2, "first": 10, "again": [1000, 7, 100], "wait": 60},
    },
    "timeouts": {
        "full": {
            "records": 2500,
            "symbols": 4,
            "latency_rate": 0.5,
            "latency_ms": [1100, 1600],
            "slow": 16,
            "wait": 45,
        },
        "small": {
            "records": 400,
            "symbols": 2,
            "latency_rate": 0.5,
            "latency_ms": [1100, 1600],
            "slow": 6,
            "wait": 40,
        },
    },
    "throttling": {
        "full": {"records": 2500, "symbols": 4, "rate": 0.2},
        "small": {"records": 400, "symbols": 2, "rate": 0.2, "wait": 120},
    },
    "kills": {
        "full": {"records": 20000, "symbols": 8, "processor_kills": 5, "trend_kills": 5},
        "small": {"records": 1000, "symbols": 2, "processor_kills": 2, "trend_kills": 2, "wait": 120},
    },
    "stack_crash": {
        "full": {"records": 20000, "symbols": 8, "rate": 4000, "kill_at": 0.3},
        "small": {"records": 1200, "symbols": 2, "rate": 1000, "kill_at": 0.3, "wait": 120},
    },
    "bad_partition": {
        "full": {"records": 2000, "symbols": 4},
        "small": {"records": 300, "symbols": 3, "wait": 120},
    },
    "fuzz": {
        "full": {"records": 2000, "symbols": 4, "malformed": 600},
        "small": {"records": 200, "symbols": 2, "malformed": 80, "wait": 120},
    },
}


def _quotes(p: Pipeline, records: int, symbols: int, seed: int = SEED) -> list[Quote]:
    quotes = list(synthetic(symbols, records, seed=seed))
    p.valid_keys.update((q.symbol, q.timestamp) for q in quotes)
    return quotes


def _send(p: Pipeline, quotes: Iterable[Quote], aggregate: int = AGGREGATE_QUOTES) -> None:
    summary = produce(quotes, p.settings, aggregate=aggregate)
    p.records_sent += summary.stream_records  # Kinesis records: an aggregate holds several quotes
    p.extra.setdefault("producer", []).append(
        {
            k: summary.to_dict()[k]
            for k in ("records", "stream_records", "calls", "retried", "failed", "seconds")
        }
    )


def _quiet(p: Pipeline, label: str, timeout: float | None = None) -> None:
    bound = {} if timeout is None else {"timeout": timeout}
    p.extra.setdefault("waits", {})[label] = wait_quiescent(p, p.records_sent, **bound)


# --------------------------------------------------------------------------- redelivery


def redelivery(p: Pipeline, size: str) -> None:
    """The whole stream delivered four times: batch size ``first``, then each of ``again``."""
    n = SIZES["redelivery"][size]
    p.set_processor_batch_size(n["first"])
    _send(p, _quotes(p, n["records"], n["symbols"]))
    _quiet(p, f"batch_size={n['first']}", timeout=n.get("wait"))
    lam = aws.client("lambda", p.settings)
    for batch_size in n["again"]:
        uuid = p.recreate_processor_mapping(batch_size)
        _until(
            lambda u=uuid: lam.get_event_source_mapping(UUID=u) and _records_done(p) >= p.records_sent,
            f"the redelivery with BatchSize {batch_size}",
            timeout=REDRIVE_WAIT_SECONDS,
        )
        _quiet(p, f"redelivery batch_size={batch_size}", timeout=n.get("wait"))
    p.extra["batch_sizes"] = [n["first"], *n["again"]]


def _records_done(p: Pipeline) -> int:
    stats = p.mapping_stats().get("processor", {})
    return int(stats.get("records_ok", 0)) + int(stats.get("records_discarded", 0))


# --------------------------------------------------------------------------- timeouts


def timeouts(p: Pipeline, size: str) -> None:
    """Processor Timeout 1 s and ``slow`` S3 writes slower than that: timeouts, bisect, retries.

    The slow calls are bounded (``max``), so a processor that survives its timeouts finishes;
    the waits are bounded by ``wait`` seconds each (a processor that never does is measured then).
    """
    n = SIZES["timeouts"][size]
    workers_before = p.worker_counters()
    lam = aws.client("lambda", p.settings)
    lam.update_function_configuration(FunctionName=p.settings.processor_function, Timeout=1)
    lam.get_waiter("function_updated").wait(
        FunctionName=p.settings.processor_function, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    spec = {
        "seed": SEED,
        "description": "chaos timeouts: slow S3 PutObject against a 1 s processor timeout",
        "rules": [
            {"service": "s3", "operation": "PutObject", "resource": p.settings.raw_bucket,
             "latency": {"rate": n["latency_rate"], "ms": n["latency_ms"], "max": n["slow"]}},
        ],
    }  # fmt: skip
    # One quote per record: the case is about timeouts, bisection and retries down to single
    # records. (With aggregates of 25 the smallest unit is 25 quotes, and this burst exhausts
    # more records' 3 retries.) A batch whose retries run out goes to the failure queue; what its
    # attempts wrote is cleaned up when the shard resumes, or replaced when it is redriven -- the
    # recovery 04 offers, done here once the faults are cleared.
    with p.faults_on(spec):
        _send(p, _quotes(p, n["records"], n["symbols"]), aggregate=1)
        _quiet(p, "under faults", timeout=n["wait"])
    _quiet(p, "faults cleared", timeout=n["wait"])
    given_up = failures.failure_queue_depth(p.settings)
    p.extra["failure_queue_before_redrive"] = given_up
    if given_up:
        report = failures.redrive(p.settings, failures=True, parked=False)
        p.extra["redrive"] = {"records_sent": report.records_sent, "left": report.left}
        p.records_sent += report.records_sent
        _quiet(p, "after redrive", timeout=n["wait"])
    after = p.worker_counters()
    p.extra["workers"] = {k: after.get(k, 0) - workers_before.get(k, 0) for k in after}


# --------------------------------------------------------------------------- throttling


def throttling(p: Pipeline, size: str) -> None:
    """20 % throttling on Kinesis PutRecords entries, DynamoDB writes and S3 PutObject, together."""
    n = SIZES["throttling"][size]
    rate = n["rate"]
    spec = {
        "seed": SEED,
        "description": f"chaos throttling: {rate:.0%} on PutRecords entries, DynamoDB writes, S3 puts",
        "rules": [
            {"service": "kinesis", "operation": "PutRecords", "resource": p.glob,
             "entry_error": {"rate": rate, "code": "ProvisionedThroughputExceededException"}},
            {"service": "dynamodb", "operation": "BatchWriteItem", "resource": p.glob,
             "unprocessed": {"rate": rate}},
            {"service": "dynamodb", "operation": ["PutItem", "UpdateItem", "DeleteItem"], "resource": p.glob,
             "error": {"rate": rate, "code": "ProvisionedThroughputExceededException"}},
            {"service": "s3", "operation": "PutObject", "resource": p.glob,
             "error": {"rate": rate, "code": "SlowDown"}},
        ],
    }  # fmt: skip
    with p.faults_on(spec):
        _send(p, _quotes(p, n["records"], n["symbols"]))
        _quiet(p, "under faults", timeout=n.get("wait"))
    _quiet(p, "faults cleared", timeout=n.get("wait"))


# --------------------------------------------------------------------------- kills


KILL_CHUNKS = 10
KILL_CHUNK_PAUSE_SECONDS = 0.3
KILL_EXTRA_CHUNKS = 6
KILL_EXTRA_PAUSE_SECONDS = 1.5  # let the chunk's invocations run before counting the kills again


def _kills_landed(p: Pipeline) -> int:
    """Kills of the running plan that landed during an invocation (the stack's own counters)."""
    plan = get_faults(p.stack)
    return sum(r.get("counters", {}).get("kills", 0) for r in plan.get("rules", []))


def kills(p: Pipeline, size: str) -> None:
    """SIGKILLs of processor and trend workers while the stream is processed."""
    n = SIZES["kills"][size]
    spec = {
        "seed": SEED,
        "description": "chaos kills: SIGKILL of processor and trend workers mid-invocation",
        "rules": [
            {"service": "lambda", "resource": p.settings.processor_function,
             "kill": {"rate": 0.35, "delay_ms": [10, 150], "max": n["processor_kills"]}},
            {"service": "lambda", "resource": p.settings.trend_function,
             "kill": {"rate": 0.5, "delay_ms": [0, 30], "max": n["trend_kills"]}},
        ],
    }  # fmt: skip
    wanted = n["processor_kills"] + n["trend_kills"]
    chunks = KILL_CHUNKS  # aggregates make few invocations of a bulk send: spread it for the kills
    size = n["records"] // chunks
    # The same walk, longer: chunks past the first ``records`` go out only while kills are missing
    # (an invocation can end before its kill's delay on a fast or a loaded machine).
    walk = list(synthetic(n["symbols"], size * (chunks + KILL_EXTRA_CHUNKS), seed=SEED))
    with p.faults_on(spec):
        for i in range(chunks + KILL_EXTRA_CHUNKS):
            if i >= chunks and _kills_landed(p) >= wanted:
                break
            chunk = walk[i * size : (i + 1) * size]
            p.valid_keys.update((q.symbol, q.timestamp) for q in chunk)
            _send(p, chunk)
            time.sleep(KILL_CHUNK_PAUSE_SECONDS if i < chunks else KILL_EXTRA_PAUSE_SECONDS)
        _quiet(p, "under faults", timeout=n.get("wait"))
    _quiet(p, "faults cleared", timeout=n.get("wait"))
    p.extra["kills_wanted"] = wanted
    p.extra["records_planned"] = size * chunks
    delivered = sum(r["counters"].get("kills", 0) for plan in p.faults for r in plan.get("rules", []))
    p.extra["kills_delivered"] = delivered
    if delivered < p.extra["kills_wanted"]:
        p.extra.setdefault("case_violations", []).append(
            f"only {delivered} of {p.extra['kills_wanted']} kills landed during an invocation"
        )


# --------------------------------------------------------------------------- stack crash

CRASH_WAIT_SECONDS = 60.0
PRODUCER_WAIT_SECONDS = 600.0  # the producer carries on through the restart: its whole send


def stack_crash(p: Pipeline, size: str) -> None:
    """SIGKILL of the local stack itself mid-stream, then ``up``: it carries on from its saved state.

    The producer loses its stack in the middle of a send. After recovery the tooling
    (:func:`helpers.notebook.verify.unprocessed`) says which quotes have to be produced again;
    those are sent, and every guarantee must hold over the whole set.
    """
    n = SIZES["stack_crash"][size]
    quotes = _quotes(p, n["records"], n["symbols"])
    outcome: dict[str, Any] = {}
    _snapshot_now(p.stack)  # the pipeline as provisioned is saved (as after any 2 s pause)

    def send() -> None:
        try:
            summary = produce(quotes, p.settings, rate=n["rate"], aggregate=1, max_attempts=3)
            outcome["summary"] = summary.to_dict()
        except ProducerError as err:
            outcome["error"] = str(err)

    producer = threading.Thread(target=send, name="chaos-crash-producer", daemon=True)
    producer.start()
    kill_at = int(n["records"] * n["kill_at"])
    deadline = time.monotonic() + CRASH_WAIT_SECONDS
    while verify.dynamodb_count(p.settings) < kill_at and time.monotonic() < deadline:
        time.sleep(0.2)
    before = status(p.stack)
    if not before.running or before.pid is None:
        raise RuntimeError("the local stack is not running: nothing to crash")
    items_at_kill = verify.dynamodb_count(p.settings)
    os.kill(before.pid, signal.SIGKILL)
    started = time.monotonic()
    up(p.stack, owner_pid=os.getpid())  # the producer is still sending: it may get through again
    restarted = round(time.monotonic() - started, 2)
    restored = status(p.stack).health or {}
    producer.join(PRODUCER_WAIT_SECONDS)
    if producer.is_alive():
        raise RuntimeError(f"the producer did not finish within {PRODUCER_WAIT_SECONDS:.0f} s of the restart")
    p.records_sent = _stream_records(p)  # what the stream holds now: every record acknowledged
    _quiet(p, "after recovery", timeout=n.get("wait"))
    committed = p.extra["waits"]["after recovery"]["committed"]
    if committed != p.records_sent:
        p.extra.setdefault("case_violations", []).append(
            f"after recovery the stream holds {p.records_sent} records but {committed} were committed"
        )
    again = verify.unprocessed(quotes, p.settings)
    p.extra["crash"] = {
        "items_at_kill": items_at_kill,
        "restart_seconds": restarted,
        "producer": outcome,
        "recovery": restored.get("persistence", {}).get("restored", {}),
        "produce_again": len(again),
    }
    if p.extra["stream_duplicates"] > MAX_RECORDS_PER_PUT:
        p.extra.setdefault("case_violations", []).append(
            f"{p.extra['stream_duplicates']} records stored twice: more than one PutRecords call in flight"
        )
    if again:
        _send(p, again)
        _quiet(p, "produced again", timeout=n.get("wait"))
    p.records_sent = _stream_records(p)


def _snapshot_now(stack: Settings) -> None:
    url = f"{stack.resolved_endpoint}/_stp/snapshot"
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=60) as answer:
        answer.read()


def _stream_records(p: Pipeline) -> int:
    """Records in the stream, read from the start of every shard.

    Records stored twice (same bytes: a PutRecords call in flight at the crash, applied, its answer
    lost, sent again by the producer, as it would be on AWS) go to ``p.extra["stream_duplicates"]``.
    """
    kinesis = aws.client("kinesis", p.settings)
    total = 0
    seen: set[bytes] = set()
    for shard in kinesis.list_shards(StreamName=p.settings.stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=p.settings.stream_name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(10_000):  # bounded: 10,000 reads of up to 10,000 records
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            total += len(page["Records"])
            seen.update(r["Data"] for r in page["Records"])
            iterator = page.get("NextShardIterator")
            if not iterator or (not page["Records"] and page.get("MillisBehindLatest", 0) == 0):
                break
    p.extra["stream_duplicates"] = total - len(seen)
    return total


# --------------------------------------------------------------------------- bad partition


def _one_shard(settings: Settings) -> None:
    """The stream created first with one shard (provision keeps it): the bad symbol shares it."""
    kinesis = aws.client("kinesis", settings)
    kinesis.create_stream(StreamName=settings.stream_name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(
        StreamName=settings.stream_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )


def bad_partition(p: Pipeline, size: str) -> None:
    """One symbol's raw-archive writes always denied: parked, the shard moves on, then redriven."""
    n = SIZES["bad_partition"][size]
    quotes = _quotes(p, n["records"], n["symbols"])
    bad = quotes[1].symbol
    bad_count = sum(q.symbol == bad for q in quotes)
    spec = {
        "seed": SEED,
        "description": f"chaos bad partition: S3 AccessDenied on symbol={bad}/ of the raw bucket",
        "rules": [
            {"service": "s3", "operation": "PutObject", "resource": p.settings.raw_bucket,
             "key_contains": f"symbol={bad}/", "error": {"rate": 1.0, "code": "AccessDenied"}},
        ],
    }  # fmt: skip
    with p.faults_on(spec):
        _send(p, quotes)
        _quiet(p, "under faults", timeout=n.get("wait"))
    from tests.chaos.harness import measure

    before = measure(p)
    keep = ("items", "raw_lines_distinct", "raw_lines_total", "accepted", "parked", "parked_in_manifests",
            "failure_queue_depth")  # fmt: skip
    p.extra["bad_symbol"] = bad
    p.extra["bad_symbol_records"] = bad_count
    p.extra["before_redrive"] = {k: before[k] for k in keep}
    p.extra["before_redrive"]["alerts_delivered"] = before["alerts_delivered"]
    p.extra["before_redrive"]["alerts_expected"] = before["alerts_expected"]
    violations = p.extra.setdefault("case_violations", [])
    if before["parked"] != bad_count:
        violations.append(f"before redrive: parked={before['parked']}, {bad} records sent={bad_count}")
    others = len(p.valid_keys) - bad_count
    views = {k: before[k] for k in ("items", "raw_lines_distinct", "raw_lines_total", "accepted")}
    if set(views.values()) != {others}:
        violations.append(f"before redrive: every other record stored once ({others}) but {views}")
    report = failures.redrive(p.settings, failures=False, parked=True)
    p.extra["redrive"] = {"records_sent": report.records_sent, "parked_objects_deleted":
                          report.parked_objects_deleted, "left": report.left}  # fmt: skip
    p.records_sent += report.records_sent
    # The redriven records arrive as new stream records (new sequence numbers): all to commit.
    _quiet(p, "after redrive", timeout=n.get("wait"))
    p.expect_parked = 0


# --------------------------------------------------------------------------- fuzz


def _malformed(rng: random.Random, count: int) -> list[tuple[str, bytes]]:
    """``count`` invalid records, each with the reason DESIGN's validation rules give it."""
    base = {"symbol": "FUZZ", "timestamp": "2026-07-29T13:30:00Z", "price": 190.5, "previous_close": 189.0,
            "open": 190.0, "high": 191.0, "low": 189.5, "volume": 1000, "source": "chaos-fuzz"}  # fmt: skip
    text = json.dumps(base)

    def variant(**changes: Any) -> bytes:
        record = {**base, **changes}
        return json.dumps(record, allow_nan=True).encode()

    def dropped(name: str) -> bytes:
        return json.dumps({k: v for k, v in base.items() if k != name}).encode()

    makers: list[Callable[[], tuple[str, bytes]]] = [
        lambda: ("not_utf8", b"\xff" + rng.randbytes(rng.randint(1, 60))),
        lambda: ("bad_json", text[: rng.randint(1, len(text) - 2)].encode()),
        lambda: ("bad_json", text.replace(":", rng.choice(["=", " ", ";"]), 1).encode()),
        lambda: ("bad_json", text.replace('"', "'", 2).encode()),
        lambda: ("bad_json", b"{" * rng.randint(1, 5)),
        lambda: ("not_an_object", rng.choice([b"[]", b"null", b"42", b'"AAPL"', b"[1, 2]", b"true"])),
        lambda: ("missing_field", dropped(rng.choice(["symbol", "timestamp", "price", "volume", "source"]))),
        lambda: ("invalid_symbol", variant(symbol=rng.choice(["aapl", "", "A" * 16, "AA PL", "A/B", 42]))),
        lambda: ("invalid_price", variant(price=-rng.uniform(0.01, 500))),
        lambda: ("invalid_price", variant(price=float("nan"))),
        lambda: ("invalid_price", variant(high=float("inf"))),
        lambda: ("invalid_price", variant(price=rng.choice([1e13, 1e300, 0.0]))),
        lambda: ("invalid_price", text.replace("190.5", "1e400").encode()),
        lambda: ("invalid_price", variant(price=rng.choice(["190.5", None, [190.5], True]))),
        lambda: ("invalid_volume", variant(volume=rng.choice([-1, 1.5, "1000", 2**64, None]))),
        lambda: ("invalid_timestamp", variant(timestamp=rng.choice(["2026-13-45T99:00Z", "late", None, ""]))),
        lambda: ("invalid_field", variant(source=rng.choice(["", 7, None]))),
    ]
    records = list(malformed_records())
    while len(records) < count:
        records.append(rng.choice(makers)())
    return records[:count]


def fuzz(p: Pipeline, size: str) -> None:
    """Malformed records mixed with valid ones: each quarantined with a reason, no handler crash."""
    n = SIZES["fuzz"][size]
    rng = random.Random(SEED)
    quotes = _quotes(p, n["records"], n["symbols"])
    bad = _malformed(rng, n["malformed"])
    chunks = 10
    for i in range(chunks):
        _send(p, quotes[i * len(quotes) // chunks : (i + 1) * len(quotes) // chunks])
        part = bad[i * len(bad) // chunks : (i + 1) * len(bad) // chunks]
        summary = put_raw((data for _, data in part), p.settings, partition_key=f"FUZZ{i % 4}")
        p.records_sent += summary.stream_records
        p.malformed_sent += summary.records
        p.malformed_expected.update(reason for reason, _ in part)
    _quiet(p, "mixed stream", timeout=n.get("wait"))


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class Case:
    name: str
    drive: Callable[[Pipeline, str], None]
    prepare: Callable[[Settings], None] | None = None
    crashes_allowed: bool = True  # kills and timeouts are crashes by design; fuzz allows none


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("redelivery", redelivery, crashes_allowed=False),
        Case("timeouts", timeouts),
        Case("throttling", throttling),
        Case("kills", kills),
        Case("stack_crash", stack_crash),
        Case("bad_partition", bad_partition, prepare=_one_shard),
        Case("fuzz", fuzz, crashes_allowed=False),
    )
}
