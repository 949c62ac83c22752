"""Benchmark: the whole deployed pipeline on the local stack, at growing sizes, in one run.

    python -m tests.bench.pipeline_bench [--sizes 10000,100000] [--rate 1000] [--rate-seconds 60]
                                         [--baseline-records 1000] [--out reports/pipeline_bench.json]

For each size N (5 symbols, seeded synthetic quotes, a fresh stack each time):

* **throughput**: N records put as fast as the producer goes; seconds until every record is
  processed (the processor mapping's checkpointed records reach N: items and raw lines are
  written before a record is checkpointed) and until every expected alert arrived in the
  alerts queue (expected: the crossover definition, :class:`~helpers.core.indicators.CrossoverTracker`,
  run over the same quotes as they are produced); missing, extra and duplicated alerts;
* **memory**: peak RSS of the stack process and of its largest Lambda worker;
* **Athena**: partitions synced, then the seed's three queries through pyathena, seconds each.

Then, on a fresh stack, a **steady rate** (``--rate`` records/s for ``--rate-seconds``):
produce -> item (read from the table's DynamoDB stream) and produce -> alert (received from
the queue) latency percentiles, each record timed from the moment the source yielded it.

Each figure stands next to the same run's **seed-style baseline**: one PutItem and one PutObject
per record, in sequence, on the same stack (``--baseline-records`` records). The ratios
time(size) / time(previous size) show how cost grows with the data. Results go to
``reports/pipeline_bench.json`` and a markdown table to stdout. Every client talks to
127.0.0.1; every wait is bounded. Not a test: pytest does not collect this file.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from helpers.core.indicators import CrossoverTracker
from helpers.core.quotes import Quote
from helpers.notebook.alerts import parse_message, queue_url
from helpers.notebook.producer import produce
from helpers.notebook.report import reports_dir
from helpers.notebook.sources import synthetic
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

log = logging.getLogger("tests.bench.pipeline")

SYMBOLS = 5
SEED = 23
DEFAULT_SIZES = (10_000, 100_000)
DEFAULT_RATE = 1000.0
DEFAULT_RATE_SECONDS = 60.0
DEFAULT_BASELINE_RECORDS = 1000
SEED_QUERIES = ("top_price_changes", "avg_volume_by_symbol", "anomalies")
POLL_SECONDS = 0.05
SECONDS_PER_RECORD_BOUND = 0.02  # a wait gives up after 120 s + this per record
STALL_SECONDS = 120.0  # ... or after this long without progress


# --------------------------------------------------------------------------- the stack


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def pipeline(tag: str) -> Iterator[tuple[Settings, int]]:
    """A fresh local stack (its own port and state folder) with the pipeline provisioned and deployed."""
    from deploy.functions import deploy_functions
    from deploy.local import down, up
    from deploy.provision import provision

    with tempfile.TemporaryDirectory(prefix=f"stp-bench-{tag}-") as state:
        s = load_settings(environ={}, local_port=_free_port(), state_dir=state)
        started = up(s)
        try:
            provision(s)
            deploy_functions(s, build_dir=Path(state) / "build")
            yield s, int(started.pid or 0)
        finally:
            down(s)


def _status_kb(pid: int, field_name: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


class MemorySampler(threading.Thread):
    """Peak RSS of the stack (its own high-water mark) and of its largest worker (sampled)."""

    def __init__(self, pid: int) -> None:
        super().__init__(name="bench-rss", daemon=True)
        self.pid = pid
        self.worker_peak_kb = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            for child in _children(self.pid):
                self.worker_peak_kb = max(self.worker_peak_kb, _status_kb(child, "VmHWM"))

    def result(self) -> dict[str, float]:
        self.stop.set()
        return {
            "stack_peak_rss_mb": round(_status_kb(self.pid, "VmHWM") / 1024, 1),
            "worker_peak_rss_mb": round(self.worker_peak_kb / 1024, 1),
        }


def _mapping_stats(s: Settings, function: str) -> dict[str, Any]:
    from deploy.local import status

    health = status(s).health or {}
    for stats in health.get("components", {}).get("lambda", {}).get("mappings", {}).values():
        if str(stats.get("function_arn", "")).endswith(f":function:{function}"):
            return dict(stats)
    return {}


def _wait(what: str, done: Any, progress: Any, bound: float) -> float:
    """Seconds until ``done()``; raises after ``bound`` s or ``STALL_SECONDS`` without progress."""
    started = last_change = time.monotonic()
    seen = progress()
    while not done():
        now = time.monotonic()
        current = progress()
        if current != seen:
            seen, last_change = current, now
        if now - started > bound or now - last_change > STALL_SECONDS:
            raise TimeoutError(f"{what}: not reached after {now - started:.0f} s (at {seen})")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


# --------------------------------------------------------------------------- what to expect


@dataclass
class Expected:
    """Send time of each quote and the alerts the crossover definition gives, as quotes are produced."""

    timed: bool = False
    sent: dict[tuple[str, str], float] = field(default_factory=dict)
    alerts: dict[str, tuple[str, str]] = field(default_factory=dict)  # alert_id -> (symbol, bar)
    trackers: dict[str, CrossoverTracker] = field(default_factory=dict)

    def watch(self, quotes: Iterator[Quote]) -> Iterator[Quote]:
        for quote in quotes:
            tracker = self.trackers.get(quote.symbol) or self.trackers.setdefault(
                quote.symbol, CrossoverTracker(quote.symbol)
            )
            signal = tracker.update(quote.timestamp, quote.price)
            if signal is not None:
                self.alerts[signal.alert_id] = (quote.symbol, quote.timestamp)
            if self.timed:
                self.sent[(quote.symbol, quote.timestamp)] = time.time()
            yield quote


class AlertInbox(threading.Thread):
    """Drains the alerts queue (long polls), noting when each ``alert_id`` first arrived."""

    def __init__(self, s: Settings) -> None:
        super().__init__(name="bench-alerts", daemon=True)
        self.sqs = aws.client("sqs", s)
        self.url = queue_url(s, sqs=self.sqs)
        self.arrived: dict[str, float] = {}
        self.messages = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            messages = self.sqs.receive_message(
                QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=1, MessageAttributeNames=["All"]
            ).get("Messages", [])
            now = time.time()
            for message in messages:
                alert = parse_message(message)
                if alert is not None:
                    self.messages += 1
                    self.arrived.setdefault(str(alert["alert_id"]), now)
            if messages:
                entries = [
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                ]
                self.sqs.delete_message_batch(QueueUrl=self.url, Entries=entries)


def _streams_headers(region: str) -> dict[str, str]:
    return {
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": "DynamoDBStreams_20120810.GetRecords",
        "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/dynamodb/aws4_request, "
        "SignedHeaders=host, Signature=0",  # the local stack routes by the credential scope
    }


class ItemWatcher(threading.Thread):
    """Reads the table's DynamoDB stream, noting when each (symbol, timestamp) item was first written."""

    def __init__(self, s: Settings) -> None:
        super().__init__(name="bench-items", daemon=True)
        self.streams = aws.client("dynamodbstreams", s)
        arn = aws.client("dynamodb", s).describe_table(TableName=s.table_name)["Table"]["LatestStreamArn"]
        shard = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        self.iterator = self.streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard, ShardIteratorType="LATEST"
        )["ShardIterator"]
        self.endpoint = str(s.resolved_endpoint)
        self.headers = _streams_headers(s.region)
        self.stored: dict[tuple[str, str], float] = {}
        self.stop = threading.Event()

    def _get_records(self) -> dict[str, Any]:
        """GetRecords as plain JSON: botocore's typed parsing of 1,000 images costs ~0.2 s of this
        process's CPU per page, which at 1,000 records/s would make the watcher the bottleneck."""
        import urllib.request

        body = json.dumps({"ShardIterator": self.iterator, "Limit": 1000}).encode()
        request = urllib.request.Request(self.endpoint, data=body, headers=self.headers, method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:  # loopback only
            return dict(json.loads(answer.read()))

    def run(self) -> None:
        while not self.stop.is_set() and self.iterator:
            page = self._get_records()
            now = time.time()
            for record in page.get("Records", []):
                if record.get("eventName") == "INSERT":
                    image = record["dynamodb"]["NewImage"]
                    self.stored.setdefault((image["symbol"]["S"], image["timestamp"]["S"]), now)
            self.iterator = page.get("NextShardIterator")
            if not page.get("Records"):
                self.stop.wait(POLL_SECONDS)


# --------------------------------------------------------------------------- the runs


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)

    return {"p50": round(statistics.median(ordered), 3), "p95": at(0.95), "p99": at(0.99), "max": at(1.0)}


def _alerts_report(expected: Expected, inbox: AlertInbox) -> dict[str, int]:
    got = set(inbox.arrived)
    return {
        "alerts_expected": len(expected.alerts),
        "alerts_received": len(got & set(expected.alerts)),
        "alerts_missing": len(set(expected.alerts) - got),
        "alerts_extra": len(got - set(expected.alerts)),
        "alert_messages_duplicated": inbox.messages - len(got),
    }


def _athena(s: Settings) -> dict[str, Any]:
    from helpers.notebook.athena import run_query
    from helpers.pipeline.catalog import sync_partitions

    started = time.monotonic()
    partitions = sync_partitions(s)
    out: dict[str, Any] = {"partitions": partitions, "sync_seconds": round(time.monotonic() - started, 2)}
    for name in SEED_QUERIES:
        started = time.monotonic()
        frame = run_query(name, s)
        out[name] = {"seconds": round(time.monotonic() - started, 3), "rows": len(frame)}
    return out


def throughput(size: int, *, athena: bool = True) -> dict[str, Any]:
    """N records as fast as they go: seconds to items, to alerts caught up; memory; Athena."""
    with pipeline(f"n{size}") as (s, pid):
        memory = MemorySampler(pid)
        memory.start()
        inbox = AlertInbox(s)
        inbox.start()
        expected = Expected()
        bound = 120.0 + SECONDS_PER_RECORD_BOUND * size
        started = time.monotonic()
        summary = produce(expected.watch(synthetic(SYMBOLS, size, seed=SEED)), s)
        put_seconds = time.monotonic() - started

        def processed() -> int:
            return int(_mapping_stats(s, s.processor_function).get("records_ok", 0))

        records = summary.stream_records  # Kinesis records: aggregates of quotes
        _wait(
            f"{size} quotes ({records} records) processed", lambda: processed() >= records, processed, bound
        )
        items_seconds = time.monotonic() - started
        received = lambda: len(set(inbox.arrived) & set(expected.alerts))  # noqa: E731
        try:
            _wait(
                f"{len(expected.alerts)} alerts", lambda: received() >= len(expected.alerts), received, bound
            )
            alerts_seconds: float | None = time.monotonic() - started
        except TimeoutError as err:
            log.error("%s", err)
            alerts_seconds = None
        time.sleep(2.0)  # a surplus alert would show up now
        inbox.stop.set()
        table = aws.client("dynamodb", s).describe_table(TableName=s.table_name)["Table"]
        result: dict[str, Any] = {
            "records": size,
            "put_seconds": round(put_seconds, 2),
            "put_records_per_second": round(size / put_seconds, 1),
            "put_calls": summary.calls,
            "items_seconds": round(items_seconds, 2),
            "items_records_per_second": round(size / items_seconds, 1),
            "items_in_table": int(table.get("ItemCount", 0)),
            "alerts_seconds": None if alerts_seconds is None else round(alerts_seconds, 2),
            "alerts_records_per_second": None if alerts_seconds is None else round(size / alerts_seconds, 1),
            **_alerts_report(expected, inbox),
            "processor": _mapping_stats(s, s.processor_function),
            "trend": _mapping_stats(s, s.trend_function),
        }
        for kind in ("processor", "trend"):
            result[kind] = {k: v for k, v in result[kind].items() if k in ("records_ok", "invocations",
                            "function_errors", "records_discarded")}  # fmt: skip
        if athena:
            result["athena"] = _athena(s)
        result.update(memory.result())
        return result


def _paced(quotes: Iterator[Quote], rate: float) -> Iterator[Quote]:
    """Yield quote n at ``n / rate`` seconds after the first (bounded: the source is finite)."""
    started = time.monotonic()
    for n, quote in enumerate(quotes):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield quote


def steady(rate: float, seconds: float) -> dict[str, Any]:
    """``rate`` records/s for ``seconds``: produce -> item and produce -> alert latency."""
    count = int(rate * seconds)
    with pipeline("steady") as (s, pid):
        memory = MemorySampler(pid)
        memory.start()
        inbox, items = AlertInbox(s), ItemWatcher(s)
        inbox.start()
        items.start()
        expected = Expected(timed=True)
        started = time.monotonic()
        # A live feed: quotes become available at ``rate`` (the source is paced, not the producer,
        # so read-ahead cannot take them early); latency runs from then to the item / the alert.
        summary = produce(expected.watch(_paced(synthetic(SYMBOLS, count, seed=SEED + 1), rate)), s)
        bound = 120.0 + SECONDS_PER_RECORD_BOUND * count
        stored = lambda: len(items.stored)  # noqa: E731
        received = lambda: len(set(inbox.arrived) & set(expected.alerts))  # noqa: E731
        with contextlib.suppress(TimeoutError):
            _wait("items of the steady run", lambda: stored() >= count, stored, bound)
            _wait("alerts of the steady run", lambda: received() >= len(expected.alerts), received, bound)
        time.sleep(2.0)
        inbox.stop.set()
        items.stop.set()
        item_latency = [items.stored[k] - t for k, t in expected.sent.items() if k in items.stored]
        alert_latency = [
            inbox.arrived[a] - expected.sent[key] for a, key in expected.alerts.items() if a in inbox.arrived
        ]
        return {
            "offered_rate": rate,
            "seconds": seconds,
            "records": count,
            "achieved_rate": round(summary.records / summary.seconds, 1) if summary.seconds else None,
            "put_calls": summary.calls,
            "items_stored": len(items.stored),
            "produce_to_item_seconds": _percentiles(item_latency),
            "produce_to_alert_seconds": _percentiles(alert_latency),
            **_alerts_report(expected, inbox),
            "wall_seconds": round(time.monotonic() - started, 1),
            **memory.result(),
        }


def baseline(records: int) -> dict[str, Any]:
    """The seed-style path on a stack of its own: one PutItem and one PutObject per record."""
    from tests.bench.processor_bench import bench_baseline

    with pipeline("baseline") as (s, _):
        quotes = list(synthetic(SYMBOLS, records, seed=SEED))
        result = bench_baseline(s, quotes)
    return {"records": records, "records_per_second": result["records_per_second"]}


def _ratios(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for small, big in itertools.pairwise(runs):
        label = f"{big['records']}/{small['records']}"
        ratio: dict[str, float | None] = {"work": round(big["records"] / small["records"], 1)}
        for key in ("items_seconds", "alerts_seconds"):
            a, b = small.get(key), big.get(key)
            ratio[key.replace("_seconds", "")] = round(b / a, 2) if a and b else None
        out[label] = ratio
    return out


def table(result: dict[str, Any]) -> str:
    base = result["baseline"]["records_per_second"]
    rows = [
        "| records | put rec/s | items: s (rec/s) | alerts: s (rec/s) | alerts missing/extra | "
        "stack / worker peak RSS MB | Athena s (3 seed queries) | × seed-style baseline (items) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["throughput"]:
        athena = run.get("athena", {})
        seconds = " / ".join(f"{athena[q]['seconds']:.2f}" for q in SEED_QUERIES if q in athena)
        alerts = (
            "—"
            if run["alerts_seconds"] is None
            else (f"{run['alerts_seconds']:.1f} ({run['alerts_records_per_second']:,.0f})")
        )
        rows.append(
            f"| {run['records']:,} | {run['put_records_per_second']:,.0f} | "
            f"{run['items_seconds']:.1f} ({run['items_records_per_second']:,.0f}) | {alerts} | "
            f"{run['alerts_missing']}/{run['alerts_extra']} | "
            f"{run['stack_peak_rss_mb']:,.0f} / {run['worker_peak_rss_mb']:,.0f} | {seconds or '—'} | "
            f"{run['items_records_per_second'] / base:.0f}× |"
        )
    rows.append(f"\nSeed-style baseline (PutItem + PutObject per record): {base:,.0f} records/s.")
    for label, ratio in result["ratios"].items():
        rows.append(
            f"time({label}): items {ratio['items']}×, alerts {ratio['alerts']}× for {ratio['work']}× the work"
        )
    if result.get("steady"):
        st = result["steady"]
        item, alert = st["produce_to_item_seconds"], st["produce_to_alert_seconds"]
        rows.append(
            f"Steady {st['offered_rate']:,.0f} records/s for {st['seconds']:.0f} s (achieved "
            f"{st['achieved_rate']:,.0f}): produce→item p50 {item['p50']} s, p95 {item['p95']} s; "
            f"produce→alert p50 {alert['p50']} s, p95 {alert['p95']} s "
            f"({st['alerts_received']}/{st['alerts_expected']} alerts)."
        )
    return "\n".join(rows)


def run(
    sizes: list[int], rate: float, rate_seconds: float, baseline_records: int, athena: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "symbols": SYMBOLS,
        "baseline": baseline(baseline_records),
        "throughput": [],
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
        "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    for size in sizes:
        log.info("throughput run: %d records", size)
        result["throughput"].append(throughput(size, athena=athena))
        log.info("%s", json.dumps(result["throughput"][-1]))
    result["ratios"] = _ratios(result["throughput"])
    if rate_seconds > 0:
        log.info("steady run: %.0f records/s for %.0f s", rate, rate_seconds)
        result["steady"] = steady(rate, rate_seconds)
    result["table"] = table(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.pipeline_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="records per run, comma-separated"
    )
    parser.add_argument("--rate", type=float, default=DEFAULT_RATE, help="records/s of the steady run")
    parser.add_argument("--rate-seconds", type=float, default=DEFAULT_RATE_SECONDS, help="0: no steady run")
    parser.add_argument("--baseline-records", type=int, default=DEFAULT_BASELINE_RECORDS)
    parser.add_argument("--no-athena", action="store_true", help="skip the Athena queries")
    parser.add_argument("--output", default=None, help="reports folder (default: reports/)")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    if not sizes or min(sizes) < 1 or args.rate <= 0 or args.baseline_records < 1:
        parser.error("--sizes, --rate and --baseline-records must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "urllib3", "pyathena", "helpers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    result = run(sizes, args.rate, args.rate_seconds, args.baseline_records, not args.no_athena)
    out = reports_dir(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline_bench.json").write_text(json.dumps(result, indent=2) + "\n")
    print(result["table"])
    print(f"\nwritten: {out / 'pipeline_bench.json'}")
    complete = all(r["alerts_missing"] == 0 and r["alerts_extra"] == 0 for r in result["throughput"])
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
