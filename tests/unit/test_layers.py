"""The three layers of ``helpers/`` hold, read from every import statement of the sources.

* ``helpers/core``: pure domain (quotes, the crossover definition, the storage layout) — the
  standard library and ``helpers.core`` only: no boto3, no I/O library.
* ``helpers/pipeline`` and ``lambda_src``: what runs inside Lambda — besides the standard library,
  boto3/botocore and ``helpers.core``/``helpers.pipeline`` only: never pandas, numpy, matplotlib,
  pyathena, yfinance, nor the notebook side.
* ``helpers/notebook``: anything but ``deploy``; nothing in ``helpers`` imports ``deploy``.

Imports inside functions count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from helpers.pipeline.config import PROJECT_ROOT

LAMBDA_RUNTIME = {"boto3", "botocore"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (PROJECT_ROOT / folder).rglob("*.py"))


def _allowed(name: str, packages: set[str]) -> bool:
    top = name.split(".")[0]
    return (
        top in sys.stdlib_module_names
        or top in packages
        or any(name == p or name.startswith(p + ".") for p in packages)
    )


def _violations(folders: tuple[str, ...], packages: set[str]) -> dict[str, list[str]]:
    bad = {}
    for path in _modules(*folders):
        wrong = sorted(n for n in _imports(path) if not _allowed(n, packages))
        if wrong:
            bad[path.relative_to(PROJECT_ROOT).as_posix()] = wrong
    return bad


def test_the_layers_exist_as_folders() -> None:
    for layer in ("core", "pipeline", "notebook"):
        assert (PROJECT_ROOT / "helpers" / layer / "__init__.py").is_file()
    assert sorted(p.name for p in (PROJECT_ROOT / "helpers").glob("*.py")) == ["__init__.py", "config.py"]


def test_core_imports_the_standard_library_and_core_only() -> None:
    assert _violations(("helpers/core",), {"helpers.core"}) == {}


def test_lambda_side_imports_neither_heavy_packages_nor_the_notebook_side() -> None:
    allowed = LAMBDA_RUNTIME | {"helpers.core", "helpers.pipeline"}
    assert _violations(("helpers/pipeline", "lambda_src"), allowed) == {}


@pytest.mark.parametrize("folder", ["helpers", "lambda_src"])
def test_nothing_in_helpers_or_lambda_src_imports_deploy(folder: str) -> None:
    offenders = {
        path.relative_to(PROJECT_ROOT).as_posix()
        for path in _modules(folder)
        if any(n == "deploy" or n.startswith("deploy.") for n in _imports(path))
    }
    assert offenders == set()


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The rule is not vacuous: a lazy pandas import inside a function is reported."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    import pandas\n    from helpers.notebook import charts\n")
    names = _imports(module)
    assert names == {"pandas", "helpers.notebook"}
    assert [n for n in names if not _allowed(n, LAMBDA_RUNTIME | {"helpers.core"})] != []
