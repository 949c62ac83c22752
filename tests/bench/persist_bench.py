"""What persistence costs: ``up`` / ``status`` / ``down`` of the local stack by state size.

    python -m tests.bench.persist_bench [--sizes 0 10000 100000] [--out reports/persist_bench.json]

For each size, a stack of its own (own port and state folder) gets the pipeline provisioned and
deployed and that many synthetic quotes put through it (processed, archived, alerts published),
then the three commands are timed as a user runs them (``python -m deploy.local ...``, a new
process each, wall clock): ``down`` (its final snapshot included), ``up`` (restore included),
``status``. Also reported: the saved bytes, the restore's own seconds, and the stack's snapshot
duration under load. Size 0 (pipeline deployed, no records) is the baseline of the same run;
ratios are against it. Not a test: numbers to read.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deploy.functions import deploy_functions
from deploy.local import down, status, up
from deploy.provision import provision
from helpers.notebook import verify
from helpers.notebook.producer import produce
from helpers.notebook.sources import synthetic
from helpers.pipeline.config import PROJECT_ROOT, Settings, load_settings
from tests.conftest import free_loopback_port

log = logging.getLogger("tests.bench.persist")

SYMBOLS = 5
SEED = 11
REPEATS = 3  # each command timed this many times; the median is reported


def _command(s: Settings, *args: str) -> float:
    env = {**os.environ, "STP_LOCAL_PORT": str(s.local_port), "STP_STATE_DIR": s.state_dir}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "deploy.local", *args], env=env, cwd=PROJECT_ROOT, check=True,
                   stdout=subprocess.DEVNULL, timeout=120)  # fmt: skip
    return time.monotonic() - started


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def measure(size: int, build: Path) -> dict[str, Any]:
    state = tempfile.mkdtemp(prefix="stp-persist-bench-")
    s = load_settings(environ={}, local_port=free_loopback_port(), state_dir=state)
    up(s)
    try:
        provision(s)
        deploy_functions(s, build_dir=build)
        loaded = time.monotonic()
        if size:
            produce(synthetic(SYMBOLS, size, seed=SEED), s, total=size)
            settled = verify.wait_for_processing(s, size, timeout=1800)
            if not settled["settled"]:
                raise RuntimeError(f"{size} records not processed: {settled}")
        load_seconds = time.monotonic() - loaded
        time.sleep(5)  # the trend function catches up; the stack goes idle
        persistence = (status(s).health or {}).get("persistence", {})
        downs, ups, statuses = [], [], []
        restored: dict[str, Any] = {}
        for _ in range(REPEATS):
            downs.append(_command(s, "down"))
            ups.append(_command(s, "up"))
            statuses.append(_command(s, "status"))
            restored = ((status(s).health or {}).get("persistence") or {}).get("restored", {})
        saved = status(s).saved or {}
        return {
            "records": size,
            "load_seconds": round(load_seconds, 1),
            "down_seconds": round(_median(downs), 2),
            "up_seconds": round(_median(ups), 2),
            "status_seconds": round(_median(statuses), 2),
            "restore_seconds": restored.get("seconds"),
            "saved_bytes": saved.get("bytes"),
            "snapshots_under_load": persistence.get("snapshots"),
            "last_snapshot_seconds": persistence.get("last_snapshot_seconds"),
            "crash_window_seconds": persistence.get("crash_window_seconds"),
        }
    finally:
        down(s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.persist_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[0, 10_000, 100_000])
    parser.add_argument("--out", default="reports/persist_bench.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for key in [k for k in os.environ if k.startswith(("STP_", "AWS_"))]:
        del os.environ[key]  # the bench's own stacks, never a developer's settings or real AWS
    build = Path(tempfile.mkdtemp(prefix="stp-persist-build-"))
    rows = []
    for size in args.sizes:
        row = measure(size, build)
        rows.append(row)
        log.info("%s", row)
    base = rows[0]
    for row in rows:
        for key in ("down_seconds", "up_seconds", "status_seconds"):
            row[key.replace("_seconds", "_ratio")] = round(row[key] / base[key], 2) if base[key] else None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"baseline_records": base["records"], "rows": rows}, indent=2))
    cols = ("records", "down_seconds", "up_seconds", "status_seconds", "restore_seconds", "saved_bytes",
            "last_snapshot_seconds", "up_ratio", "down_ratio")  # fmt: skip
    print(" | ".join(cols))
    for row in rows:
        print(" | ".join(str(row.get(c)) for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
