"""Build the Lambda deployment packages (zips) of the two functions, reproducibly.

A package holds exactly the handler ``lambda_src/<function>.py`` (handler
``lambda_src.<function>.handler``) and the project modules it imports, directly or through
other project modules (:func:`import_closure`, read from the sources with :mod:`ast`, imports
inside functions included), with the ``__init__.py`` of every package on the way, plus the
pure-Python distributions listed in :data:`VENDORED_DISTRIBUTIONS`. Nothing else of
``helpers/`` ships: the notebook side never reaches a function. boto3 and its dependencies
are not packaged: the AWS Python runtime provides them (:data:`LAMBDA_RUNTIME_PACKAGES`).
Entries are sorted, timestamped 1980-01-01 and permission-normalised, so the same sources give
the same bytes, hence the same CodeSha256, and ``deploy_functions`` uploads code only when it
really changed.

``python -m deploy.package`` builds both into ``.local/build/`` and prints their sizes.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import logging
import sys
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from helpers.core.errors import DeployError
from helpers.pipeline.config import PROJECT_ROOT

__all__ = [
    "FUNCTIONS",
    "HANDLERS",
    "LAMBDA_RUNTIME_PACKAGES",
    "MAX_ZIP_BYTES",
    "PROJECT_PACKAGES",
    "VENDORED_DISTRIBUTIONS",
    "build_all",
    "build_zip",
    "import_closure",
    "sha256_b64",
    "zip_report",
]

log = logging.getLogger(__name__)

FUNCTIONS = ("processor", "trend")
HANDLERS = {"processor": "lambda_src.processor.handler", "trend": "lambda_src.trend.handler"}
PROJECT_PACKAGES = ("helpers", "lambda_src")  # top-level packages whose modules may ship
# Pure-Python distributions shipped inside the zip (none needed today: helpers is stdlib+boto3).
VENDORED_DISTRIBUTIONS: tuple[str, ...] = ()
# What the AWS Lambda Python runtime already provides (never packaged; tests emulate it).
LAMBDA_RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
MAX_ZIP_BYTES = 50 * 1024 * 1024  # direct-upload limit of CreateFunction / UpdateFunctionCode
ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)
_SKIP_PARTS = {"__pycache__", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def default_build_dir() -> Path:
    return PROJECT_ROOT / ".local" / "build"


def _skipped(relative: str) -> bool:
    parts = relative.split("/")
    return any(p in _SKIP_PARTS or p.startswith(".") for p in parts) or relative.endswith(_SKIP_SUFFIXES)


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path, module: str) -> set[str]:
    """Project modules named by every import statement of ``path`` (function bodies included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return {m for m in found if m.split(".")[0] in PROJECT_PACKAGES}


def import_closure(module: str, root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """Every project module ``module`` needs, with the packages that contain them: name -> file."""
    closure: dict[str, Path] = {}
    pending = [module]
    while pending:
        name = pending.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # the module and every enclosing package
            prefix = ".".join(parts[:depth])
            if prefix in closure:
                continue
            path = _module_file(root, prefix)
            if path is None:
                continue  # `from pkg import name` where name is not a module
            closure[prefix] = path
            pending.extend(_imported_modules(path, prefix))
    return closure


def _vendored(names: Iterable[str]) -> Iterator[tuple[str, Path]]:
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError as err:
            raise DeployError(
                f"vendored distribution {name!r} is not installed; install the locked dependencies"
            ) from err
        for file in dist.files or []:
            relative = file.as_posix()
            if relative.startswith("..") or _skipped(relative) or relative.endswith(".dist-info/RECORD"):
                continue
            path = Path(str(dist.locate_file(file)))
            if path.suffix in (".so", ".pyd", ".dylib"):
                raise DeployError(f"vendored distribution {name!r} is not pure Python ({relative})")
            if path.is_file():
                yield relative, path


def package_entries(function: str, root: Path = PROJECT_ROOT) -> list[tuple[str, Path]]:
    """(archive name, source file) pairs of ``function``'s package, sorted by name."""
    if function not in HANDLERS:
        raise DeployError(f"unknown function {function!r}: use one of {sorted(HANDLERS)}")
    handler_file = root / "lambda_src" / f"{function}.py"
    if not handler_file.is_file():
        raise DeployError(f"{handler_file} is missing: the {function} handler has not been written yet")
    module = HANDLERS[function].rpartition(".")[0]
    entries = {path.relative_to(root).as_posix(): path for path in import_closure(module, root).values()}
    entries.update(_vendored(VENDORED_DISTRIBUTIONS))
    missing = [name for name, path in entries.items() if not path.is_file()]
    if missing:
        raise DeployError(f"files missing from the package: {missing}")
    return sorted(entries.items())


def build_zip(function: str, out_dir: str | Path | None = None, *, root: Path = PROJECT_ROOT) -> Path:
    """Build ``<out_dir>/<function>.zip`` deterministically and return its path."""
    out = Path(out_dir) if out_dir is not None else default_build_dir()
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"{function}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, path in package_entries(function, root):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIMESTAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16  # regular file, rw-r--r--
            info.create_system = 3  # unix, whatever the build machine
            archive.writestr(info, path.read_bytes())
    tmp.replace(target)
    size = target.stat().st_size
    if size > MAX_ZIP_BYTES:
        raise DeployError(f"{target} is {size} bytes, above Lambda's {MAX_ZIP_BYTES}-byte upload limit")
    log.info("built %s (%d bytes)", target, size)
    return target


def build_all(out_dir: str | Path | None = None, functions: Iterable[str] = FUNCTIONS) -> dict[str, Path]:
    return {function: build_zip(function, out_dir) for function in functions}


def sha256_b64(path: str | Path) -> str:
    """The zip's SHA-256 as Lambda reports it in ``CodeSha256`` (base64)."""
    import base64

    return base64.b64encode(hashlib.sha256(Path(path).read_bytes()).digest()).decode()


def zip_report(paths: dict[str, Path] | Iterable[Path]) -> list[dict[str, Any]]:
    """Size, entry count and CodeSha256 of each built zip."""
    items = paths.items() if isinstance(paths, dict) else ((Path(p).stem, Path(p)) for p in paths)
    rows = []
    for function, path in items:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
        rows.append(
            {
                "function": function,
                "path": str(path),
                "zip_bytes": Path(path).stat().st_size,
                "unzipped_bytes": sum(i.file_size for i in infos),
                "files": len(infos),
                "handler": HANDLERS.get(function),
                "code_sha256": sha256_b64(path),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.package", description="Build the Lambda zips.")
    parser.add_argument(
        "--out", default=str(default_build_dir()), help="output folder (default .local/build)"
    )
    parser.add_argument("functions", nargs="*", help=f"which to build (default: {' '.join(FUNCTIONS)})")
    args = parser.parse_args(argv)
    try:
        paths = build_all(args.out, args.functions or FUNCTIONS)
    except DeployError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for row in zip_report(paths):
        print(f"{row['function']:<10} {row['zip_bytes']:>9,} bytes  {row['files']:>3} files  {row['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
