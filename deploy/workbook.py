"""Run the numbered notebooks in order with papermill, headlessly (``make demo`` uses this).

Executed notebooks go to the reports folder next to ``summary.json``, which gains a
``notebooks`` list of ``{name, status, seconds}``. When a notebook fails, the remaining ones
are skipped except the teardown notebook, so a failed run does not leave resources behind;
the local stack is stopped at the end if this run started it.

    python -m deploy.workbook                       # every notebook, local target
    python -m deploy.workbook --only 00 01 07       # a subset, by number
    python -m deploy.workbook -p SOURCE=synthetic   # extra notebook parameters
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.notebook.report import REPORTS_ENV, read_summary, reports_dir, write_summary
from helpers.pipeline.config import PROJECT_ROOT, Settings, load_settings

__all__ = ["NOTEBOOKS_DIR", "TEARDOWN_PREFIX", "NotebookRun", "discover", "run_workbook"]

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TEARDOWN_PREFIX = "07"
KERNEL_NAME = "python3"
CELL_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class NotebookRun:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2)}
        if self.error:
            data["error"] = self.error
        return data


def discover(only: Iterable[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Numbered notebooks (``NN_verb_noun.ipynb``) in order, optionally filtered by number."""
    notebooks = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {str(n).zfill(2) for n in only}
        notebooks = [p for p in notebooks if p.name[:2] in wanted]
    return notebooks


def _declared_parameters(path: Path) -> set[str]:
    import papermill

    return set(papermill.inspect_notebook(str(path)))


def run_workbook(
    settings: Settings | None = None,
    *,
    only: Iterable[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    stop_stack: bool = True,
    notebooks_dir: Path = NOTEBOOKS_DIR,
) -> list[NotebookRun]:
    """Execute the notebooks; returns one :class:`NotebookRun` per notebook."""
    import papermill

    s = settings or load_settings()
    out = reports_dir(output_dir)
    os.environ.update(s.to_environment())  # every kernel resolves exactly these settings
    os.environ[REPORTS_ENV] = str(out)
    os.environ.setdefault("MPLBACKEND", "Agg")
    write_summary({"target": s.target, "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, out)

    stack_was_running = False
    if s.is_local:
        from deploy.local import status

        stack_was_running = status(s).running

    runs: list[NotebookRun] = []
    failed = False
    params = {"TARGET": s.target, "REPORTS_DIR": str(out), **(parameters or {})}
    try:
        for path in discover(only, notebooks_dir):
            if failed and not path.name.startswith(TEARDOWN_PREFIX):
                runs.append(NotebookRun(path.stem, "skipped", 0.0))
                continue
            declared = _declared_parameters(path)
            start = time.monotonic()
            log.info("running %s", path.name)
            try:
                papermill.execute_notebook(
                    str(path),
                    str(out / path.name),
                    parameters={k: v for k, v in params.items() if k in declared},
                    cwd=str(path.parent),
                    kernel_name=KERNEL_NAME,
                    progress_bar=False,
                    execution_timeout=CELL_TIMEOUT_SECONDS,
                )
            except Exception as err:  # papermill raises PapermillExecutionError and kernel errors
                failed = True
                message = str(err).strip().splitlines()
                runs.append(
                    NotebookRun(path.stem, "failed", time.monotonic() - start, message[-1] if message else "")
                )
                log.error("%s failed: %s", path.name, err)
            else:
                runs.append(NotebookRun(path.stem, "ok", time.monotonic() - start))
            summary = read_summary(out)
            summary["notebooks"] = [r.to_dict() for r in runs]
            write_summary(summary, out)
    finally:
        if s.is_local and stop_stack and not stack_was_running:
            from deploy.local import down

            down(s)
    return runs


def _parse_parameter(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"parameter {text!r} must look like NAME=VALUE")
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.workbook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="notebook numbers to run, e.g. 00 01 07")
    parser.add_argument("--output", default=None, help="reports folder (default: reports/)")
    parser.add_argument("-p", "--parameter", action="append", type=_parse_parameter, default=[])
    parser.add_argument("--keep-stack", action="store_true", help="leave the local stack running")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    settings = load_settings()
    runs = run_workbook(
        settings,
        only=args.only,
        parameters=dict(args.parameter),
        output_dir=args.output,
        stop_stack=not args.keep_stack,
    )
    out = reports_dir(args.output)
    width = max((len(r.name) for r in runs), default=10)
    for r in runs:
        print(f"  {r.name:<{width}}  {r.status:<7} {r.seconds:7.1f} s" + (f"  {r.error}" if r.error else ""))
    print(f"\nExecuted notebooks, charts and summary.json are in {out}/")
    return 0 if runs and all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
