"""Where the local stack's memory goes: N records through the deployed pipeline, then a census.

    python -m tests.bench.stack_census [--records 50000] [--out reports/stack_census.json]

Starts the local stack **in this process** (so its stores can be walked), provisions and deploys
the pipeline, puts N synthetic quotes (5 symbols) through the producer, waits until the processor
has checkpointed every record and the trend function is idle, then reports, per store, the bytes
reachable from it (a walk of the Python objects, each object counted once, in the order listed)
and bytes per record, beside the process's RSS and what Python's allocator holds. Not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

log = logging.getLogger("tests.bench.census")

SYMBOLS = 5
SEED = 23

_SKIP = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType,
         types.CodeType, types.FrameType)  # fmt: skip


def deep_size(roots: list[Any], seen: set[int], kinds: dict[str, list[int]] | None = None) -> tuple[int, int]:
    """Bytes and objects reachable from ``roots`` not in ``seen`` (classes, modules, functions
    are not followed: they are code, shared by everything)."""
    total = count = 0
    stack = list(roots)
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIP):
            continue
        seen.add(id(obj))
        size = sys.getsizeof(obj)
        total += size
        count += 1
        if kinds is not None:
            kind = kinds.setdefault(type(obj).__qualname__, [0, 0])
            kind[0] += size
            kind[1] += 1
        stack.extend(gc.get_referents(obj))
    return total, count


def _rss_kb(field: str = "VmRSS") -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def stores(account: str, region: str) -> dict[str, list[Any]]:
    """The roots of each store, in census order (what an earlier store holds is not counted again)."""
    from moto.backends import get_backend

    ddb = get_backend("dynamodb")[account][region]
    tables = list(ddb.tables.values())
    kinesis = get_backend("kinesis")[account][region]
    s3 = get_backend("s3")[account]["global"]
    out: dict[str, list[Any]] = {
        "dynamodb_stream_records": [t.stream_shard.items for t in tables if t.stream_shard is not None],
        "dynamodb_items": [t.items for t in tables],
        "kinesis_records": [sh.records for st in kinesis.streams.values() for sh in st.shards.values()],
        "s3_objects": [b.keys for b in s3.buckets.values()],
    }
    for service in ("sqs", "sns", "logs", "lambda", "glue", "iam", "events"):
        with contextlib.suppress(Exception):
            backend = get_backend(service)[account]
            out[service] = [backend.get(region) or backend.get("global") or backend]
    out["dynamodb_rest"] = [ddb]
    out["kinesis_rest"] = [kinesis]
    out["s3_rest"] = [s3]
    return out


def census(records: int, account: str, region: str, extra: dict[str, list[Any]]) -> dict[str, Any]:
    gc.collect()
    seen: set[int] = set()
    by_store: dict[str, Any] = {}
    for name, roots in {**stores(account, region), **extra}.items():
        size, count = deep_size(roots, seen)
        by_store[name] = {
            "mb": round(size / 2**20, 1),
            "bytes_per_record": round(size / records, 1),
            "objects_per_record": round(count / records, 2),
        }
    everything, _ = deep_size(gc.get_objects(), seen, kinds := {})
    by_store["everything_else_tracked"] = {"mb": round(everything / 2**20, 1),
                                           "bytes_per_record": round(everything / records, 1)}  # fmt: skip
    top = sorted(kinds.items(), key=lambda kv: -kv[1][0])[:25]
    by_store["everything_else_by_type"] = {k: {"mb": round(v[0] / 2**20, 1), "objects": v[1]} for k, v in top}
    return by_store


def run(records: int) -> dict[str, Any]:
    from deploy.functions import deploy_functions
    from deploy.local.server import LocalStack
    from deploy.provision import provision
    from helpers.notebook.producer import produce
    from helpers.notebook.sources import synthetic
    from helpers.pipeline.config import load_settings

    with tempfile.TemporaryDirectory(prefix="stp-census-") as state:
        stack = LocalStack(0, state)
        stack.start()
        try:
            s = load_settings(environ={}, local_port=stack.port, state_dir=state)
            provision(s)
            deploy_functions(s, build_dir=Path(state) / "build")
            rss_deployed = _rss_kb()
            started = time.monotonic()
            summary = produce(synthetic(SYMBOLS, records, seed=SEED), s)
            mappings = lambda: stack.health()["components"]["lambda"]["mappings"]  # noqa: E731

            def ok(function: str) -> int:
                return sum(int(m.get("records_ok", 0)) for m in mappings().values()
                           if str(m.get("function_arn", "")).endswith(":function:" + function))  # fmt: skip

            while (done := ok(s.processor_function)) < summary.stream_records:
                if time.monotonic() - started > 60 + records / 100:
                    raise TimeoutError(f"{done} of {summary.stream_records} records processed")
                time.sleep(0.2)
            processed = time.monotonic() - started
            last, quiet = -1, 0
            while quiet < 10:  # the trend function: no new records for 2 s
                now = ok(s.trend_function)
                quiet = quiet + 1 if now == last else 0
                last = now
                time.sleep(0.2)
            rss = _rss_kb()
            result = {
                "records": records,
                "stream_records": summary.stream_records,
                "seconds_to_processed": round(processed, 1),
                "rss_mb_deployed": round(rss_deployed / 1024, 1),
                "rss_mb": round(rss / 1024, 1),
                "peak_rss_mb": round(_rss_kb("VmHWM") / 1024, 1),
                "rss_bytes_per_record": round((rss - rss_deployed) * 1024 / records, 1),
                "python_allocated_blocks": sys.getallocatedblocks(),
            }
            components = {f"component_{c.name}": [c] for c in stack.components}
            result["stores"] = census(records, "123456789012", s.region, components)
            return result
        finally:
            stack.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.stack_census", description=__doc__)
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--out", default=None, help="write the JSON here as well")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    result = run(args.records)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
