"""The local runtime runs a function under its declared Python when one is installed."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from deploy.local._lambda import workers

HOST = f"python{sys.version_info.major}.{sys.version_info.minor}"


def test_the_hosts_own_version_runs_on_the_host() -> None:
    assert workers.interpreter_for(HOST, path="") == (sys.executable, f"{HOST} (local)")


def test_an_installed_runtime_interpreter_is_used(tmp_path: Path) -> None:
    shim = tmp_path / "python3.99"  # answers the version probe as 3.99, runs anything else
    shim.write_text(
        f'#!/bin/sh\ncase "$*" in *version_info*) echo 3.99;; *) exec {sys.executable} "$@";; esac\n'
    )
    shim.chmod(0o755)
    path, version = workers.interpreter_for("python3.99", path=str(tmp_path))
    assert path == str(shim)
    assert version == f"python3.99 (local: {shim})"


def test_an_interpreter_on_path_that_does_not_run_is_not_used(tmp_path: Path) -> None:
    # e.g. a pyenv shim of a version that is installed but not active: "command not found"
    shim = tmp_path / "python3.97"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.97: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    path, version = workers.interpreter_for("python3.97", path=str(tmp_path))
    assert path == sys.executable and "python3.97 not installed" in version


def test_a_missing_runtime_falls_back_to_the_host_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers, "_warned_runtimes", set())
    with caplog.at_level(logging.WARNING, logger=workers.log.name):
        first = workers.interpreter_for("python3.98", path=str(tmp_path))
        second = workers.interpreter_for("python3.98", path=str(tmp_path))
    assert first == second == (sys.executable, f"python3.98 (local: on {HOST}, python3.98 not installed)")
    warnings = [r.getMessage() for r in caplog.records if "python3.98" in r.getMessage()]
    assert len(warnings) == 1 and "not installed here" in warnings[0]


def test_the_deployed_runtime_is_one_botocore_knows() -> None:
    import botocore.session

    from deploy.function_specs import RUNTIME

    model = botocore.session.get_session().get_service_model("lambda")
    assert RUNTIME in model.shape_for("Runtime").enum
    assert RUNTIME == "python3.13"
