"""Run the numbered notebooks in order with papermill, headlessly (``make demo`` uses this).

Each run writes into a fresh run folder ``<output>/<run-id>/`` (``reports/`` by default) and
``<output>/latest`` points at it: the executed notebooks (charts inline), the charts as PNG and
SVG, ``summary.json`` (with a ``notebooks`` list of ``{name, status, seconds}`` and the run's
status) and a self-contained ``report.html``. When a notebook fails, the remaining ones are
skipped except the teardown notebook, so a failed run does not leave resources behind; an
interrupted run (Ctrl-C, SIGTERM) is recorded as ``interrupted``. The local stack is stopped at
the end if this run started it.

    python -m deploy.workbook                       # every notebook, local target
    python -m deploy.workbook --only 00 01 07       # a subset, by number
    python -m deploy.workbook -p SOURCE=synthetic   # notebook parameters (refused if no notebook has it)
    python -m deploy.workbook --junit junit.xml     # one JUnit test case per notebook, for CI
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import re
import signal
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from helpers.core.errors import ParameterError
from helpers.notebook.report import (
    REPORTS_ENV,
    new_run_folder,
    point_latest,
    read_summary,
    reports_dir,
    write_summary,
)
from helpers.pipeline.config import PROJECT_ROOT, Settings, load_settings

__all__ = [
    "NOTEBOOKS_DIR",
    "RUNNER_PARAMETERS",
    "TEARDOWN_PREFIX",
    "NotebookRun",
    "Workbook",
    "WorkbookInterrupted",
    "check_parameters",
    "discover",
    "notebook_parameters",
    "run_workbook",
    "select",
    "write_junit",
]

log = logging.getLogger(__name__)

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
TEARDOWN_PREFIX = "07"
KERNEL_NAME = "python3"
CELL_TIMEOUT_SECONDS = 900
# Set by the runner itself: TARGET from the resolved settings, REPORTS_DIR the run folder.
RUNNER_PARAMETERS = {
    "TARGET": "the target comes from the settings: export STP_TARGET=aws (or local) instead",
    "REPORTS_DIR": "the run folder is chosen by the runner: use --output FOLDER instead",
}
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class WorkbookInterrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, SIGTERM); ``runs`` holds what was recorded, the last one
    ``interrupted``."""

    def __init__(self, runs: Sequence[NotebookRun]) -> None:
        super().__init__("workbook run interrupted")
        self.runs = list(runs)


@dataclass(frozen=True)
class NotebookRun:
    name: str
    status: str  # ok | failed | skipped | interrupted
    seconds: float
    error: str | None = None
    cell: str | None = None  # the failing cell's source
    details: str | None = None  # the failing cell's traceback, without colour codes
    cell_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "status": self.status, "seconds": round(self.seconds, 2)}
        if self.error:
            data["error"] = self.error
        return data


# --------------------------------------------------------------------------- choosing what runs


def discover(only: Iterable[str] | None = None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Numbered notebooks (``NN_verb_noun.ipynb``) in order, optionally filtered by number."""
    notebooks = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {str(n).zfill(2) for n in only}
        notebooks = [p for p in notebooks if p.name[:2] in wanted]
    return notebooks


def select(only: Iterable[str] | None, folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The notebooks ``--only`` names (numbers ``3``/``03`` or names ``03_produce``), in order.

    Raises :class:`ParameterError` naming the valid choices for anything that is not a notebook.
    """
    notebooks = discover(None, folder)
    if only is None:
        return notebooks
    by_key = {p.name[:2]: p for p in notebooks} | {p.stem: p for p in notebooks}
    wanted = [str(n).zfill(2) if str(n).isdigit() else str(n) for n in only]
    unknown = [n for n in wanted if n not in by_key]
    if unknown or not wanted:
        valid = ", ".join(f"{p.name[:2]} ({p.stem})" for p in notebooks)
        what = f"no notebook {', '.join(map(repr, unknown))}" if unknown else "--only names no notebook"
        raise ParameterError(f"{what} in {folder}; valid: {valid}")
    chosen = {by_key[n] for n in wanted}
    return [p for p in notebooks if p in chosen]


def notebook_parameters(notebooks: Iterable[Path]) -> dict[str, set[str]]:
    """The names each notebook's ``parameters`` cell assigns, as papermill sees them."""
    import papermill

    return {p.stem: set(papermill.inspect_notebook(str(p))) for p in notebooks}


def check_parameters(parameters: Mapping[str, Any], declared: Mapping[str, set[str]]) -> None:
    """Refuse ``-p`` names no notebook declares (a typo would be ignored) and the runner's own."""
    for name in parameters:
        if name in RUNNER_PARAMETERS:
            raise ParameterError(f"-p {name}=... is not accepted: {RUNNER_PARAMETERS[name]}")
    valid = sorted(set().union(*declared.values()) - set(RUNNER_PARAMETERS)) if declared else []
    unknown = sorted(set(parameters) - set(valid))
    if unknown:
        raise ParameterError(
            f"unknown notebook parameter(s) {', '.join(unknown)}: no notebook's parameters cell has "
            f"{'it' if len(unknown) == 1 else 'them'}; valid names: {', '.join(valid)}"
        )


# --------------------------------------------------------------------------- one run


@dataclass
class Workbook:
    """One workbook run into ``folder``: :meth:`start`, :meth:`run` per notebook, :meth:`finish`.

    ``run_workbook`` drives it for the CLI; the pytest collector (``tests/notebooks/workbook_items.py``)
    drives it one test item per notebook.
    """

    settings: Settings
    folder: Path
    parameters: Mapping[str, Any] = field(default_factory=dict)
    stop_stack: bool = True
    progress: Callable[[str], None] | None = None
    total: int = 0
    redact: bool = True
    runs: list[NotebookRun] = field(default_factory=list)
    failed: bool = False
    _stack_was_running: bool = False
    _saved_environment: dict[str, str | None] = field(default_factory=dict)

    def start(self) -> None:
        s = self.settings
        self.folder.mkdir(parents=True, exist_ok=True)
        changes = {**s.to_environment(), REPORTS_ENV: str(self.folder)}  # every kernel resolves these
        changes.setdefault("MPLBACKEND", os.environ.get("MPLBACKEND", "Agg"))  # PNG outputs, not a GUI
        self._saved_environment = {k: os.environ.get(k) for k in changes}  # finish() puts them back
        os.environ.update(changes)
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        run = {"id": self.folder.name, "status": "running"}
        write_summary({"target": s.target, "started_at": started, "run": run}, self.folder)
        if s.is_local:
            from deploy.local import status, up
            from helpers.core.errors import LocalStackError

            self._stack_was_running = status(s).running
            if self.stop_stack and not self._stack_was_running:  # it ends with this runner, SIGKILL included
                try:
                    up(s, owner_pid=os.getpid())
                except LocalStackError as err:  # notebook 00 meets it again and records it in the run
                    log.warning("%s", err)

    def restart_stack(self) -> None:
        """Stop the local stack and start it again (its state comes back from the state folder)."""
        from deploy.local import down, up

        s = self.settings
        if not s.is_local:
            raise ParameterError("restarting the stack needs target 'local'")
        started = time.monotonic()
        down(s)
        up(s, owner_pid=os.getpid() if self.stop_stack and not self._stack_was_running else None)
        self._say(f"local stack restarted from its saved state in {time.monotonic() - started:.1f} s")

    def _say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def run(self, path: Path) -> NotebookRun:
        """Execute one notebook (skipped after a failure, except the teardown); record it."""
        import papermill

        number = f"[{len(self.runs) + 1}/{self.total or '?'}]"
        if self.failed and not path.name.startswith(TEARDOWN_PREFIX):
            result = NotebookRun(path.stem, "skipped", 0.0, "skipped: an earlier notebook failed")
            self._say(f"{number} {path.stem}: skipped (an earlier notebook failed)")
            return self._record(result)
        declared = set(papermill.inspect_notebook(str(path)))
        params = {"TARGET": self.settings.target, "REPORTS_DIR": str(self.folder), **self.parameters}
        self._say(f"{number} {path.stem}: running")
        start = time.monotonic()
        try:
            papermill.execute_notebook(
                str(path),
                str(self.folder / path.name),
                parameters={k: v for k, v in params.items() if k in declared},
                cwd=str(path.parent),
                kernel_name=KERNEL_NAME,
                progress_bar=False,
                execution_timeout=CELL_TIMEOUT_SECONDS,
                config=_kernel_config(),
            )
        except KeyboardInterrupt:
            self._record(NotebookRun(path.stem, "interrupted", time.monotonic() - start, "interrupted"))
            self._say(f"{number} {path.stem}: interrupted after {time.monotonic() - start:.1f} s")
            raise
        except Exception as err:  # papermill raises PapermillExecutionError and kernel errors
            self.failed = True
            result = _failure(path.stem, time.monotonic() - start, err)
            log.debug("%s failed: %s", path.name, err)
        else:
            result = NotebookRun(path.stem, "ok", time.monotonic() - start)
        result = self._redact(result, self.folder / path.name)
        line = f"{number} {path.stem}: {result.status} in {result.seconds:.1f} s"
        self._say(line + (f" — {result.error}" if result.error else ""))
        return self._record(result)

    @property
    def _account(self) -> str | None:
        """The AWS account id to mask in what the run writes (target aws only, unless ``redact`` is
        off; local ids are moto's)."""
        return self.settings.account_id if self.redact and self.settings.target == "aws" else None

    def _redact(self, result: NotebookRun, executed: Path) -> NotebookRun:
        """Mask the account id in the executed notebook and in the failure text (shared reports)."""
        account = self._account
        if not account:
            return result
        from dataclasses import replace

        from helpers.notebook.redact import redact_notebook, redact_text

        if executed.is_file():
            redact_notebook(executed, account)

        def mask(text: str | None) -> str | None:
            return redact_text(text, account) if text else text

        return replace(result, error=mask(result.error), cell=mask(result.cell), details=mask(result.details))

    def _record(self, result: NotebookRun) -> NotebookRun:
        self.runs.append(result)
        summary = read_summary(self.folder)
        summary["notebooks"] = [r.to_dict() for r in self.runs]
        write_summary(summary, self.folder)
        return result

    def finish(self, *, interrupted: bool = False) -> str:
        """Record the run's status, write ``report.html``, stop the stack this run started."""
        status = (
            "interrupted"
            if interrupted
            else ("ok" if self.runs and all(r.status == "ok" for r in self.runs) else "failed")
        )
        try:
            summary = read_summary(self.folder)
            summary["notebooks"] = [r.to_dict() for r in self.runs]
            summary["run"] = {
                **summary.get("run", {}),
                "id": self.folder.name,
                "status": status,
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            write_summary(summary, self.folder)
            from helpers.notebook.report_html import write_report

            page = write_report(self.folder)
            if self._account:
                from helpers.notebook.redact import redact_text

                page.write_text(
                    redact_text(page.read_text(encoding="utf-8"), self._account), encoding="utf-8"
                )
        finally:
            s = self.settings
            if s.is_local and self.stop_stack and not self._stack_was_running:
                from deploy.local import down

                down(s)
            for name, value in self._saved_environment.items():  # the runner's process as it was
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
        return status


def _kernel_config() -> Any:
    """Kernels talk to the runner over local IPC sockets where the OS has them (not loopback TCP),
    so ipykernel has no reason to warn "Kernel is running over TCP without encryption"."""
    from traitlets.config import Config

    config = Config()
    if os.name == "posix":
        config.KernelManager.transport = "ipc"
    return config


def _failure(name: str, seconds: float, err: Exception) -> NotebookRun:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        details = _ANSI.sub("", "\n".join(err.traceback or []))
        return NotebookRun(
            name,
            "failed",
            seconds,
            f"{err.ename}: {err.evalue}".strip(),
            cell=err.source,
            details=details,
            cell_index=err.cell_index,
        )
    message = _ANSI.sub("", str(err)).strip().splitlines()
    return NotebookRun(
        name, "failed", seconds, message[-1] if message else type(err).__name__, details=str(err)
    )


def run_workbook(
    settings: Settings | None = None,
    *,
    only: Iterable[str] | None = None,
    parameters: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
    stop_stack: bool = True,
    notebooks_dir: Path = NOTEBOOKS_DIR,
    progress: Callable[[str], None] | None = None,
    restart_stack_after: str | None = None,
    redact: bool = True,
) -> list[NotebookRun]:
    """Execute the notebooks into the folder ``output_dir``; one :class:`NotebookRun` per notebook.

    ``restart_stack_after`` (a notebook number, target local): stop the local stack after that
    notebook and start it again from its saved state before the next one, as a user coming back
    the next day would (``python -m deploy.local down`` / ``up``). ``redact=False`` keeps the AWS
    account id in the executed notebooks and the report (target aws masks it by default).

    Unknown ``only`` entries and ``parameters`` are refused (:class:`ParameterError`) before
    anything runs. A KeyboardInterrupt stops the run: the notebook running is recorded as
    ``interrupted``, the run's status too, and :class:`WorkbookInterrupted` (a KeyboardInterrupt
    holding the runs) is raised.
    """
    paths = select(only, notebooks_dir)
    check_parameters(parameters or {}, notebook_parameters(discover(None, notebooks_dir)))
    workbook = Workbook(
        settings or load_settings(),
        reports_dir(output_dir),
        dict(parameters or {}),
        stop_stack=stop_stack,
        progress=progress,
        total=len(paths),
        redact=redact,
    )
    workbook.start()
    interrupted = False
    try:
        for path in paths:
            workbook.run(path)
            if restart_stack_after is not None and path.name[:2] == restart_stack_after[:2]:
                workbook.restart_stack()
    except KeyboardInterrupt as err:
        interrupted = True
        raise WorkbookInterrupted(workbook.runs) from err
    finally:
        workbook.finish(interrupted=interrupted)
    return workbook.runs


# --------------------------------------------------------------------------- JUnit XML


def write_junit(runs: Sequence[NotebookRun], path: str | Path, *, suite: str = "workbook") -> Path:
    """JUnit XML: one ``testcase`` per notebook; failures carry the failing cell's source and error."""
    cases = []
    for r in runs:
        case = ET.Element("testcase", classname=f"{suite}.notebooks", name=r.name, time=f"{r.seconds:.3f}")
        if r.status == "failed":
            failure = ET.SubElement(case, "failure", message=r.error or "failed", type="NotebookFailure")
            where = f"cell {r.cell_index}" if r.cell_index is not None else "notebook"
            failure.text = (
                f"{where} failed: {r.error}\n\n--- cell source ---\n{r.cell or '(not available)'}\n\n"
                f"--- error ---\n{r.details or r.error or ''}\n"
            )
        elif r.status == "interrupted":
            ET.SubElement(
                case, "error", message="interrupted", type="KeyboardInterrupt"
            ).text = "the run was interrupted while this notebook ran"
        elif r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.error or "skipped")
        cases.append(case)
    counts = {s: sum(r.status == s for r in runs) for s in ("failed", "interrupted", "skipped")}
    testsuite = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(runs)),
        failures=str(counts["failed"]),
        errors=str(counts["interrupted"]),
        skipped=str(counts["skipped"]),
        time=f"{sum(r.seconds for r in runs):.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()),
    )
    testsuite.extend(cases)
    root = ET.Element("testsuites")
    root.append(testsuite)
    ET.indent(root)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(target, encoding="utf-8", xml_declaration=True)
    return target


# --------------------------------------------------------------------------- command line


def _parse_parameter(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"parameter {text!r} must look like NAME=VALUE")
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.workbook", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="notebooks to run, by number or name, e.g. 00 01 07")
    parser.add_argument(
        "--output", default=None, help="reports folder holding the run folders (default: reports/)"
    )
    parser.add_argument(
        "-p", "--parameter", action="append", type=_parse_parameter, default=[], metavar="NAME=VALUE"
    )
    parser.add_argument(
        "--junit", default=None, metavar="PATH", help="write JUnit XML, one test case per notebook"
    )
    parser.add_argument("--keep-stack", action="store_true", help="leave the local stack running")
    parser.add_argument(
        "--restart-stack-after", metavar="NN",
        help="stop the local stack after notebook NN and start it again before the next (its state survives)",
    )  # fmt: skip
    parser.add_argument(
        "--no-redact", action="store_true",
        help="keep the AWS account id in the executed notebooks and report (target aws masks it)",
    )  # fmt: skip
    parser.add_argument(
        "--notebooks", type=Path, default=NOTEBOOKS_DIR, help="folder of the numbered notebooks"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    logging.getLogger("traitlets").setLevel(logging.ERROR)
    parameters = dict(args.parameter)
    try:  # refuse typos before creating anything
        paths = select(args.only, args.notebooks)
        if not paths:
            raise ParameterError(f"{args.notebooks} holds no numbered notebooks (NN_name.ipynb)")
        check_parameters(parameters, notebook_parameters(discover(None, args.notebooks)))
    except ParameterError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    settings = load_settings()
    root = reports_dir(args.output)
    folder = new_run_folder(root)
    latest = point_latest(folder, root)
    print(
        f"Run {folder.name}: {len(paths)} notebook(s), target {settings.target}, outputs in {folder}/",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _terminate)  # CI cancels with SIGTERM: record the run as interrupted
    interrupted = False
    runs: list[NotebookRun] = []
    try:
        runs = run_workbook(
            settings,
            only=[p.name[:2] for p in paths],
            parameters=parameters,
            output_dir=folder,
            stop_stack=not args.keep_stack,
            notebooks_dir=args.notebooks,
            restart_stack_after=args.restart_stack_after,
            redact=not args.no_redact,
            progress=lambda line: print(line, flush=True),
        )
    except WorkbookInterrupted as err:
        interrupted, runs = True, err.runs
    finally:
        if latest.is_dir() and not latest.is_symlink():
            point_latest(folder, root)  # refresh the copy made where symlinks fail
    if args.junit:
        write_junit(runs, args.junit)
    width = max((len(r.name) for r in runs), default=10)
    print()
    for r in runs:
        print(f"  {r.name:<{width}}  {r.status:<11} {r.seconds:7.1f} s" + (f"  {r.error}" if r.error else ""))
    print(f"\nReport: {folder / 'report.html'}\nExecuted notebooks, charts and summary.json: {folder}/")
    print(f"{latest} -> {folder.name}" + (f"\nJUnit XML: {args.junit}" if args.junit else ""))
    if interrupted:
        print("Interrupted: resources may remain; `python -m deploy.workbook --only 07` removes them.")
        return EXIT_INTERRUPTED
    return 0 if runs and all(r.status == "ok" for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
