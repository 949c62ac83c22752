"""pytest plugin: each numbered notebook (``NN_name.ipynb``) is a test item, run in order (nbmake's idea).

Opt-in, so ``make test`` does not run the workbook twice (``tests/notebooks/test_workbook.py``
already runs it once)::

    .venv/bin/python -m pytest -p tests.notebooks.workbook_items notebooks/
    .venv/bin/python -m pytest -p tests.notebooks.workbook_items notebooks/ --junitxml=junit.xml \\
        --workbook-param SOURCE=synthetic --workbook-output /tmp/reports

The items share one :class:`deploy.workbook.Workbook` run — the same run folder, parameters and
rules as ``python -m deploy.workbook``: after a failure the later notebooks are skipped, except
the teardown; the run folder gets ``summary.json`` and ``report.html``; the local stack this run
started is stopped at the end. A failing item shows the failing cell's source and its error.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from deploy.workbook import NotebookRun, Workbook, check_parameters, notebook_parameters
from helpers.core.errors import ParameterError

NOTEBOOK_NAME = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
_WORKBOOK = pytest.StashKey[Workbook]()
_ITEMS = pytest.StashKey[list["NotebookItem"]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("workbook", "numbered notebooks as test items")
    group.addoption(
        "--workbook-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a notebook parameter, as the runner's -p (refused if no collected notebook declares it)",
    )
    group.addoption(
        "--workbook-output", default=None, help="reports folder for the run folder (default: reports/)"
    )
    group.addoption("--workbook-keep-stack", action="store_true", help="leave the local stack running")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if NOTEBOOK_NAME.match(file_path.name) and ".ipynb_checkpoints" not in file_path.parts:
        return NotebookFile.from_parent(parent, path=file_path)
    return None


def _parameters(config: pytest.Config) -> dict[str, Any]:
    params = {}
    for text in config.getoption("--workbook-param"):
        key, sep, raw = text.partition("=")
        if not sep or not key.isidentifier():
            raise pytest.UsageError(f"--workbook-param {text!r} must look like NAME=VALUE")
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw
    return params


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    notebooks = [item for item in items if isinstance(item, NotebookItem)]
    if not notebooks:
        return
    notebooks.sort(key=lambda item: item.path.name)  # the workbook's order, whatever the folders
    others = [item for item in items if not isinstance(item, NotebookItem)]
    items[:] = others + notebooks
    params = _parameters(config)
    try:
        check_parameters(params, notebook_parameters(item.path for item in notebooks))
    except ParameterError as err:
        raise pytest.UsageError(str(err)) from err
    config.stash[_ITEMS] = notebooks


def _workbook(config: pytest.Config) -> Workbook:
    if _WORKBOOK not in config.stash:
        from helpers.notebook.report import new_run_folder, point_latest, reports_dir
        from helpers.pipeline.config import load_settings

        root = reports_dir(config.getoption("--workbook-output"))
        folder = new_run_folder(root)
        point_latest(folder, root)
        workbook = Workbook(
            load_settings(),
            folder,
            _parameters(config),
            stop_stack=not config.getoption("--workbook-keep-stack"),
            total=len(config.stash.get(_ITEMS, [])),
        )
        workbook.start()
        config.stash[_WORKBOOK] = workbook
    return config.stash[_WORKBOOK]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    workbook = session.config.stash.get(_WORKBOOK, None)
    if workbook is not None:
        workbook.finish(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)


class NotebookFailed(Exception):
    def __init__(self, run: NotebookRun) -> None:
        super().__init__(run.error)
        self.run = run


class NotebookFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [NotebookItem.from_parent(self, name=self.path.stem)]


class NotebookItem(pytest.Item):
    def runtest(self) -> None:
        run = _workbook(self.config).run(self.path)
        self.user_properties.append(("run_folder", str(_workbook(self.config).folder)))
        if run.status == "skipped":
            pytest.skip(run.error or "skipped")
        if run.status != "ok":
            raise NotebookFailed(run)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, NotebookFailed):
            run = excinfo.value.run
            where = f"cell {run.cell_index}" if run.cell_index is not None else "the notebook"
            return (
                f"{self.path.name}: {where} failed: {run.error}\n\n"
                f"--- cell source ---\n{run.cell or '(not available)'}\n\n--- error ---\n{run.details or ''}"
            )
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"notebook {self.path.stem}"
