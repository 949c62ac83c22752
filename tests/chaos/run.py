"""Run the chaos matrix on a local stack of its own and write the report (``make chaos``).

    python -m tests.chaos.run [--size full|small] [--only CASE ...] [--out reports/chaos.json]

See :mod:`tests.chaos` for the matrix and how to read the report. Exit status 0 when every case
is ok, 1 otherwise (the report is written either way).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpers.pipeline.config import Settings, load_settings
from tests.chaos.cases import CASES, SIZES
from tests.chaos.harness import CaseResult, run_case

log = logging.getLogger("tests.chaos")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_matrix(
    stack: Settings,
    size: str,
    names: list[str],
    build_dir: Path,
    done: Callable[[list[CaseResult]], None] | None = None,
) -> list[CaseResult]:
    """Every named case, one after the other, on the running ``stack``; ``done`` after each."""
    results: list[CaseResult] = []
    for name in names:
        case = CASES[name]
        log.info("chaos case %s (%s) ...", name, size)
        result = run_case(stack, name, case.drive, size, build_dir=build_dir, prepare=case.prepare,
                          crashes_allowed=case.crashes_allowed)  # fmt: skip
        log.info("chaos case %s: %s in %.0f s %s", name, "ok" if result.ok else "NOT OK",
                 result.report["wall_seconds"], result.report.get("violations") or "")  # fmt: skip
        results.append(result)
        if done is not None:
            done(results)
    return results


def report(results: list[CaseResult], size: str, seconds: float) -> dict[str, Any]:
    return {
        "size": size,
        "ok": all(r.ok for r in results),
        "wall_seconds": round(seconds, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sizes": {name: SIZES[name][size] for name in (r.name for r in results)},
        "cases": {r.name: r.report for r in results},
    }


def _table(data: dict[str, Any]) -> str:
    cols = ("records_sent", "items", "raw_lines_distinct", "raw_lines_total", "accepted", "parked",
            "alerts_expected", "alerts_delivered", "alerts_duplicates", "wall_seconds")  # fmt: skip
    head = "| case | ok | " + " | ".join(cols) + " |"
    rows = [head, "|" + "---|" * (len(cols) + 2)]
    for name, r in data["cases"].items():
        cells = " | ".join(str(r.get(c, "")) for c in cols)
        rows.append(f"| {name} | {'yes' if r.get('ok') else 'NO'} | {cells} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.run", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("full", "small"), default="full")
    parser.add_argument(
        "--only", action="append", choices=sorted(CASES), help="run only this case (repeatable)"
    )
    parser.add_argument("--out", default="reports/chaos.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "urllib3", "deploy", "helpers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for key in [k for k in os.environ if k.startswith(("STP_", "AWS_"))]:
        del os.environ[key]  # the runner's stack, never a developer's settings or real AWS
    # each case's pipeline has names of its own, which the runner policy (the default names) refuses
    os.environ["STP_LOCAL_IAM"] = "0"
    names = args.only or list(CASES)

    from deploy.local import down, up

    def _interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")  # so the stack is stopped in ``finally``

    signal.signal(signal.SIGTERM, _interrupted)

    started = time.monotonic()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(results: list[CaseResult]) -> dict[str, Any]:
        """The report so far (rewritten after every case: an interrupted run leaves its cases)."""
        data = report(results, args.size, time.monotonic() - started)
        data["complete"] = len(results) == len(names)
        out.write_text(json.dumps(data, indent=2, default=str) + "\n")
        return data

    with tempfile.TemporaryDirectory(prefix="stp-chaos-") as tmp:
        stack = load_settings(local_port=_free_port(), state_dir=str(Path(tmp) / "state"))
        try:
            up(stack)
            results = run_matrix(stack, args.size, names, Path(tmp) / "build", done=write)
        finally:
            down(stack)
    data = write(results)
    sys.stdout.write(_table(data) + f"\n\nchaos ({args.size}): {'ok' if data['ok'] else 'NOT OK'} in "
                     f"{data['wall_seconds']:.0f} s; report: {out}\n")  # fmt: skip
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
