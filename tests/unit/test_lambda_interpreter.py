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
    shim = tmp_path / "python3.99"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    shim.chmod(0o755)
    path, version = workers.interpreter_for("python3.99", path=str(tmp_path))
    assert path == str(shim)
    assert version == f"python3.99 (local: {shim})"


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
