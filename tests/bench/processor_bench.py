"""Benchmark: the batched processor vs a seed-style per-record baseline, in one run, on the local stack.

    python -m tests.bench.processor_bench [--records N] [--symbols K] [--endpoint URL]   (make bench)

The same N synthetic quotes go through

(a) :func:`helpers.pipeline.processor.process_batch`, in Kinesis-shaped events of 500 records;
(b) a seed-style baseline: one ``PutItem`` and one ``PutObject`` per record, in sequence;

each into a table and bucket of its own. AWS API calls are counted with botocore's
``before-call`` event on the clients each path uses. Then the deployed pipeline is timed end to
end (producer -> Kinesis -> processor Lambda in the local runtime -> stores): per record, the
bench's clock from PutRecords' answer to the record's first appearance in a processor manifest
(written after its item and raw object), and the items' own ``processed_at - produced_at``
(1 s resolution). Results go to ``reports/bench.json``
and a markdown table to stdout. Not a test: pytest does not collect this file.
"""

from __future__ import annotations

import argparse
import base64
import json
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from deploy.provision import PROCESSED_KEY_SCHEMA
from helpers.core import layout
from helpers.core.quotes import Quote, parse_timestamp, utc_now_timestamp
from helpers.notebook import verify
from helpers.notebook.producer import MAX_RECORDS_PER_PUT, produce
from helpers.notebook.report import reports_dir
from helpers.notebook.sources import synthetic
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings
from helpers.pipeline.processor import (
    MANIFEST_PREFIX,
    MAX_ITEMS_PER_BATCH_WRITE,
    process_batch,
    processed_item,
)

DEFAULT_RECORDS = 2000
DEFAULT_SYMBOLS = 2
DEFAULT_E2E_RATE = 1000.0  # records/s offered to the deployed pipeline
E2E_TIMEOUT_SECONDS = 120.0
E2E_POLL_SECONDS = 0.1
SHARD = "shardId-000000000000"


class CallCounter:
    """Counts API calls (botocore ``before-call``) on the clients registered with it."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _count(self, model: Any = None, **_: Any) -> None:
        with self._lock:
            self.calls[model.name if model is not None else "?"] += 1

    def client(self, service: str, settings: Settings) -> Any:
        fresh = aws.client(service, settings, cached=False)
        fresh.meta.events.register("before-call", self._count)
        return fresh

    @property
    def total(self) -> int:
        return sum(self.calls.values())


def _store(base: Settings, name: str) -> Settings:
    """A fresh table and bucket named ``name`` (same key schema as the processed table)."""
    s = load_settings(
        **{**base.to_dict(), "endpoint_url": base.endpoint_url, "table_name": name, "raw_bucket": name}
    )
    aws.client("s3", s).create_bucket(Bucket=name)
    aws.client("dynamodb", s).create_table(
        TableName=name,
        **PROCESSED_KEY_SCHEMA,
        BillingMode="PAY_PER_REQUEST",
    )
    return s


class _Capture:
    """A Kinesis client that accepts every PutRecords entry, keeping what the producer sent."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> dict[str, Any]:
        first = len(self.entries)
        self.entries.extend(Records)
        answers = [{"ShardId": SHARD, "SequenceNumber": str(first + n + 1)} for n in range(len(Records))]
        return {"FailedRecordCount": 0, "Records": answers}


def _events(quotes: list[Quote], settings: Settings) -> Iterator[dict[str, Any]]:
    """Kinesis-shaped events of what the producer puts for each batch of 500 quotes (aggregates
    included), one shard, increasing sequence numbers."""
    capture = _Capture()
    now = time.time()
    for start in range(0, len(quotes), MAX_RECORDS_PER_PUT):
        sent = len(capture.entries)
        produce(quotes[start : start + MAX_RECORDS_PER_PUT], settings, kinesis=capture, linger=None)
        yield {
            "Records": [
                {
                    "kinesis": {
                        "partitionKey": entry["PartitionKey"],
                        "sequenceNumber": str(seq),
                        "data": base64.b64encode(entry["Data"]).decode(),
                        "approximateArrivalTimestamp": now,
                    },
                    "eventSource": "aws:kinesis",
                    "eventID": f"{SHARD}:{seq}",
                }
                for seq, entry in enumerate(capture.entries[sent:], start=sent + 1)
            ]
        }


def _result(name: str, records: int, seconds: float, counter: CallCounter) -> dict[str, Any]:
    return {
        "path": name,
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_second": round(records / seconds, 1),
        "api_calls": counter.total,
        "api_calls_per_1000_records": round(counter.total * 1000 / records, 1),
        "calls_by_operation": dict(sorted(counter.calls.items())),
    }


def bench_processor(base: Settings, quotes: list[Quote]) -> dict[str, Any]:
    s = _store(base, "bench-batched")
    counter = CallCounter()
    s3, ddb, glue = (counter.client(x, s) for x in ("s3", "dynamodb", "glue"))
    events = list(_events(quotes, s))
    started = time.perf_counter()
    failures = [process_batch(e, s, s3=s3, dynamodb=ddb, glue=glue)["batchItemFailures"] for e in events]
    result = _result("processor (batched)", len(quotes), time.perf_counter() - started, counter)
    counts = verify.store_counts(s)
    result["check"] = {
        "failures": sum(map(len, failures)),
        **{k: counts[k] for k in ("records_accepted", "dynamodb_items", "raw_records", "raw_objects")},
    }
    return result


def bench_baseline(base: Settings, quotes: list[Quote]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeSerializer

    s = _store(base, "bench-baseline")
    counter = CallCounter()
    s3, ddb = counter.client("s3", s), counter.client("dynamodb", s)
    serializer = TypeSerializer()
    started = time.perf_counter()
    for seq, quote in enumerate(quotes, 1):  # what a per-record handler does
        item = processed_item(quote, utc_now_timestamp())
        ddb.put_item(TableName=s.table_name, Item={k: serializer.serialize(v) for k, v in item.items()})
        key = layout.raw_key(*layout.raw_partition(quote.symbol, quote.timestamp), SHARD, str(seq))
        s3.put_object(Bucket=s.raw_bucket, Key=key, Body=quote.to_json())
    result = _result("seed-style baseline", len(quotes), time.perf_counter() - started, counter)
    result["check"] = {
        "dynamodb_items": verify.dynamodb_count(s),
        "raw_objects": sum(1 for _ in _keys(s)),
    }
    return result


def _keys(s: Settings) -> Iterator[str]:
    for page in aws.client("s3", s).get_paginator("list_objects_v2").paginate(Bucket=s.raw_bucket):
        yield from (o["Key"] for o in page.get("Contents", []))


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50": round(statistics.median(ordered), 3), "p95": round(p95, 3), "max": round(ordered[-1], 3)}


class _TimedKinesis:
    """The real Kinesis client, noting when PutRecords acknowledged each (shard, sequence number)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sent: dict[tuple[str, str], float] = {}

    def put_records(self, **kwargs: Any) -> Any:
        response = self.inner.put_records(**kwargs)
        now = time.time()
        for answer in response["Records"]:
            if not answer.get("ErrorCode"):
                self.sent[(answer["ShardId"], answer["SequenceNumber"])] = now
        return response


def _watch_manifests(base: Settings, records: int, seen: dict[tuple[str, str], float]) -> None:
    """Note when each record first appears in a processor manifest (written after its item and object)."""
    s3 = aws.client("s3", base)
    read: set[tuple[str, str]] = set()
    quotes: set[tuple[str, str]] = set()
    deadline = time.monotonic() + E2E_TIMEOUT_SECONDS
    while len(quotes) < records and time.monotonic() < deadline:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=base.raw_bucket, Prefix=MANIFEST_PREFIX)
        for obj in (o for page in pages for o in page.get("Contents", [])):
            if (obj["Key"], obj["ETag"]) in read:
                continue
            read.add((obj["Key"], obj["ETag"]))
            manifest = json.loads(s3.get_object(Bucket=base.raw_bucket, Key=obj["Key"])["Body"].read())
            now = time.time()
            for ident in [*manifest["accepted"], *manifest["quarantined"]]:
                quotes.add((manifest["shard"], ident))  # "<seq>:<line>" inside an aggregate
                seen.setdefault((manifest["shard"], ident.split(":")[0]), now)  # its Kinesis record
        time.sleep(E2E_POLL_SECONDS)


def bench_end_to_end(base: Settings, records: int, symbols: int, rate: float) -> dict[str, Any]:
    """Producer -> stream -> deployed processor -> stores; latency per record."""
    try:
        from deploy.functions import deploy_functions

        deploy_functions(base, functions=["processor"])
    except Exception as err:  # the deploy code or the local runtime may be missing
        return {"skipped": f"could not deploy the processor: {type(err).__name__}: {err}"}
    quotes = list(synthetic(symbols, records, seed=11, start="2026-02-02T14:30:00Z"))
    kinesis = _TimedKinesis(aws.client("kinesis", base))
    seen: dict[tuple[str, str], float] = {}
    watcher = threading.Thread(target=_watch_manifests, args=(base, records, seen), daemon=True)
    watcher.start()
    summary = produce(quotes, base, kinesis=kinesis, rate=rate)
    watcher.join(E2E_TIMEOUT_SECONDS + 10)
    observed = [seen[k] - t for k, t in kinesis.sent.items() if k in seen]
    stamps = []
    for page in aws.client("dynamodb", base).get_paginator("scan").paginate(TableName=base.table_name):
        for item in page["Items"]:
            if "produced_at" in item:
                gap = parse_timestamp(item["processed_at"]["S"]) - parse_timestamp(item["produced_at"]["S"])
                stamps.append(gap.total_seconds())
    return {
        "records": records,
        "offered_rate": rate,
        "produce_seconds": round(summary.seconds, 3),
        "processed": len(seen),
        "latency_seconds_observed": _percentiles(observed),
        "latency_seconds_item_stamps": _percentiles(stamps),
        "note": "observed: bench clock, from the PutRecords answer to the record's first appearance in a "
        f"processor manifest (polled every {E2E_POLL_SECONDS} s); item stamps: processed_at - produced_at "
        "(1 s resolution)",
    }


def _table(result: dict[str, Any]) -> str:
    a, b = result["processor"], result["baseline"]
    rows = [
        "| path | records | seconds | records/s | API calls | API calls / 1,000 records |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in (a, b):
        rows.append(
            f"| {r['path']} | {r['records']:,} | {r['seconds']:.2f} | {r['records_per_second']:,.0f} "
            f"| {r['api_calls']:,} | {r['api_calls_per_1000_records']:,.1f} |"
        )
    rows.append("")
    rows.append(f"Speed-up: **{result['speedup']:.1f}x** records/s in the same run.")
    e2e = result["end_to_end"]
    if "skipped" in e2e:
        rows.append(f"End-to-end latency: skipped ({e2e['skipped']}).")
    else:
        obs, st = e2e["latency_seconds_observed"], e2e["latency_seconds_item_stamps"]
        rows.append(
            f"Produce -> processed latency through the deployed pipeline ({e2e['records']:,} quotes in "
            f"{e2e['processed']:,} Kinesis records, offered at {e2e['offered_rate']:,.0f} rec/s): "
            f"p50 **{obs['p50']} s**, p95 **{obs['p95']} s** "
            f"(item stamps, 1 s resolution: p50 {st['p50']} s, p95 {st['p95']} s)."
        )
    return "\n".join(rows)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(records: int, symbols: int, endpoint: str | None, e2e_rate: float, out: Path) -> dict[str, Any]:
    from deploy.local import down, up
    from deploy.provision import provision

    if endpoint:
        port = urlparse(endpoint).port or 4566
        base = load_settings(environ={}, endpoint_url=endpoint, local_port=port)
        own_stack, state = False, None
    else:
        state = tempfile.TemporaryDirectory(prefix="stp-bench-")
        base = load_settings(environ={}, local_port=_free_port(), state_dir=state.name)
        up(base, iam=False)  # stores named per path, which the runner policy (the default names) refuses
        own_stack = True
    try:
        provision(base)
        quotes = list(synthetic(symbols, records, seed=7))
        processor = bench_processor(base, quotes)
        stored = {k: processor["check"][k] for k in ("records_accepted", "dynamodb_items", "raw_records")}
        if set(stored.values()) != {records} or processor["check"]["failures"]:
            raise RuntimeError(f"the processor did not store the {records} quotes: {processor['check']}")
        baseline = bench_baseline(base, quotes)
        result: dict[str, Any] = {
            "records": records,
            "symbols": symbols,
            "batch_size": MAX_RECORDS_PER_PUT,
            "items_per_batch_write": MAX_ITEMS_PER_BATCH_WRITE,
            "processor": processor,
            "baseline": baseline,
            "speedup": round(processor["records_per_second"] / baseline["records_per_second"], 1),
            "end_to_end": bench_end_to_end(base, records, symbols, e2e_rate),
            "machine": {
                "python": platform.python_version(),
                "cpus": _cpus(),
                "platform": platform.platform(),
            },
            "measured_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
    finally:
        if own_stack:
            down(base)
            if state is not None:
                state.cleanup()
    result["table"] = _table(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.processor_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=DEFAULT_RECORDS, help="synthetic records per path")
    parser.add_argument("--symbols", type=int, default=DEFAULT_SYMBOLS, help="distinct symbols (partitions)")
    parser.add_argument("--endpoint", default=None, help="use a running local stack instead of starting one")
    parser.add_argument(
        "--e2e-rate", type=float, default=DEFAULT_E2E_RATE, help="records/s offered end to end"
    )
    parser.add_argument("--output", default=None, help="reports folder (default: reports/)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.symbols < 1:
        parser.error("--records and --symbols must be >= 1")
    result = run(args.records, args.symbols, args.endpoint, args.e2e_rate, reports_dir(args.output))
    print(result["table"])
    print(f"\nwritten: {reports_dir(args.output) / 'bench.json'}")
    a, b = result["processor"], result["baseline"]
    ok = a["api_calls_per_1000_records"] <= 50 and a["records_per_second"] >= 10 * b["records_per_second"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
