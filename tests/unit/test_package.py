"""Lambda packaging: reproducible zips that carry the handler and the Lambda-safe helpers only.

The isolation tests run the packaged code the way the AWS Python runtime does: a fresh
interpreter (``-I -S``: no site-packages, no PYTHONPATH) whose path is the extracted zip plus the
packages the runtime provides (boto3 and its dependencies), so pandas and matplotlib are not
importable there, exactly as on AWS.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from deploy import package
from helpers.core.errors import DeployError
from helpers.pipeline.config import PROJECT_ROOT, load_settings

FAKE_HANDLER = (
    "import boto3\nfrom helpers.pipeline.config import load_settings\n\n\n"
    "def handler(event, context):\n    return {'batchItemFailures': []}\n"
)


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A project copy with stand-in handlers, the real helpers tree and some build litter."""
    root = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "helpers", root / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "lambda_src").mkdir()
    (root / "lambda_src" / "__init__.py").write_text("")
    for function in package.FUNCTIONS:
        (root / "lambda_src" / f"{function}.py").write_text(FAKE_HANDLER)
    (root / "helpers" / "__pycache__").mkdir()
    (root / "helpers" / "__pycache__" / "config.cpython-311.pyc").write_bytes(b"junk")
    (root / "helpers" / ".ipynb_checkpoints").mkdir()
    (root / "helpers" / ".ipynb_checkpoints" / "x.py").write_text("")
    (root / "helpers" / "workbook_tools.py").write_text("import pandas\n")
    return root


def _runtime_dir(tmp_path: Path) -> Path:
    """What the AWS Python runtime puts on sys.path besides the code: boto3 and its dependencies."""
    import boto3

    site = Path(boto3.__file__).resolve().parent.parent
    runtime = tmp_path / "lambda-runtime"
    runtime.mkdir()
    for name in package.LAMBDA_RUNTIME_PACKAGES:
        source = site / name if (site / name).is_dir() else site / f"{name}.py"
        assert source.exists(), f"{name} is not installed next to boto3"
        (runtime / source.name).symlink_to(source)
    return runtime


def _run_isolated(code_dir: Path, runtime_dir: Path, script: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        **load_settings().lambda_environment(),
    }
    prelude = f"import sys; sys.path[:0] = [{str(code_dir)!r}, {str(runtime_dir)!r}]\n"
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + script],
        cwd=code_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _extract(zip_path: Path, target: Path) -> Path:
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(target)
    return target


def test_zip_is_byte_for_byte_reproducible(fake_root: Path, tmp_path: Path) -> None:
    first = package.build_zip("processor", tmp_path / "a", root=fake_root)
    # mtimes do not matter
    os.utime(fake_root / "helpers" / "pipeline" / "config.py", (1_000_000_000, 1_000_000_000))
    second = package.build_zip("processor", tmp_path / "b", root=fake_root)

    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {package.ZIP_TIMESTAMP}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_zip_holds_the_handler_and_its_import_closure_only(fake_root: Path, tmp_path: Path) -> None:
    names = set(zipfile.ZipFile(package.build_zip("trend", tmp_path, root=fake_root)).namelist())

    # The stand-in handler imports helpers.pipeline.config, which imports core errors and layout.
    assert names == {
        "lambda_src/__init__.py",
        "lambda_src/trend.py",
        "helpers/__init__.py",
        "helpers/core/__init__.py",
        "helpers/core/errors.py",
        "helpers/core/layout.py",
        "helpers/pipeline/__init__.py",
        "helpers/pipeline/config.py",
    }


@pytest.mark.parametrize("function", package.FUNCTIONS)
def test_zip_file_list_is_the_handlers_runtime_import_closure(function: str, tmp_path: Path) -> None:
    """GIVEN the real handler WHEN a Lambda-like interpreter imports it from the project tree
    THEN the project modules it loaded are exactly the files of the zip (an allow list, not a deny list)."""
    module = package.HANDLERS[function].rsplit(".", 1)[0]
    script = (
        f"import importlib, json; importlib.import_module({module!r})\n"
        "root = sys.path[0]\n"
        "files = sorted(m.__file__[len(root) + 1:] for n, m in sys.modules.items()\n"
        "               if n.split('.')[0] in ('helpers', 'lambda_src') and getattr(m, '__file__', None))\n"
        "print(json.dumps(files))\n"
    )

    result = _run_isolated(PROJECT_ROOT, _runtime_dir(tmp_path), script)

    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    names = set(zipfile.ZipFile(package.build_zip(function, tmp_path / "zip")).namelist())
    assert names == loaded
    assert not [n for n in names if n.startswith("helpers/notebook/")]


def test_every_shipped_helpers_module_imports_without_notebook_dependencies(tmp_path: Path) -> None:
    code = _extract(package.build_zip("processor", tmp_path), tmp_path / "code")
    modules = sorted(
        ".".join(p.relative_to(code).with_suffix("").parts)
        for p in (code / "helpers").rglob("*.py")
        if p.stem != "__init__"
    )
    script = (
        "import importlib, json\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "heavy = [m for m in ('pandas', 'numpy', 'matplotlib', 'pyathena') if m in sys.modules]\n"
        "print(json.dumps(heavy))\n"
    )

    result = _run_isolated(code, _runtime_dir(tmp_path), script)

    assert result.returncode == 0, (
        f"a shipped helpers module needs a notebook-only dependency:\n{result.stderr}"
    )
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("function", package.FUNCTIONS)
def test_real_handler_imports_where_pandas_and_matplotlib_do_not(function: str, tmp_path: Path) -> None:
    if not (PROJECT_ROOT / "lambda_src" / f"{function}.py").is_file():
        pytest.skip(f"lambda_src/{function}.py has not been written yet")
    code = _extract(package.build_zip(function, tmp_path), tmp_path / "code")
    module, attribute = package.HANDLERS[function].rsplit(".", 1)
    script = (
        "import importlib\n"
        "for banned in ('pandas', 'matplotlib'):\n"
        "    try:\n        importlib.import_module(banned)\n"
        "    except ImportError:\n        print(banned, 'absent')\n"
        f"handler = getattr(importlib.import_module({module!r}), {attribute!r})\n"
        "assert callable(handler)\n"
        "print('handler', handler.__module__, sys.modules['helpers'].__file__)\n"
    )

    result = _run_isolated(code, _runtime_dir(tmp_path), script)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["pandas absent", "matplotlib absent"]
    assert lines[2].startswith(f"handler {module} {code}")  # helpers came from the zip


def test_zip_report_gives_sizes_and_the_code_sha256_lambda_reports(fake_root: Path, tmp_path: Path) -> None:
    paths = {f: package.build_zip(f, tmp_path, root=fake_root) for f in package.FUNCTIONS}

    rows = package.zip_report(paths)

    assert [r["function"] for r in rows] == list(package.FUNCTIONS)
    for row, path in zip(rows, paths.values(), strict=True):
        assert row["zip_bytes"] == path.stat().st_size and 0 < row["zip_bytes"] < row["unzipped_bytes"]
        assert row["code_sha256"] == base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
        assert row["handler"] == f"lambda_src.{row['function']}.handler"


def test_missing_or_unknown_handlers_are_reported(fake_root: Path, tmp_path: Path) -> None:
    (fake_root / "lambda_src" / "trend.py").unlink()

    with pytest.raises(DeployError, match="trend handler has not been written"):
        package.build_zip("trend", tmp_path, root=fake_root)
    with pytest.raises(DeployError, match="unknown function"):
        package.build_zip("nope", tmp_path, root=fake_root)


def test_cli_builds_both_zips_and_prints_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = [f for f in package.FUNCTIONS if not (PROJECT_ROOT / "lambda_src" / f"{f}.py").is_file()]
    if missing:
        pytest.skip(f"handlers not written yet: {missing}")

    assert package.main(["--out", str(tmp_path)]) == 0

    out = capsys.readouterr().out
    for function in package.FUNCTIONS:
        assert (tmp_path / f"{function}.zip").is_file() and function in out and "bytes" in out
