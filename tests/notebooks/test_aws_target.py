"""``STP_TARGET=aws`` alone switches every notebook to AWS: none of them touches the local stack.

Without credentials each notebook stops in its settings cell with the credentials message (on
AWS the default bucket names need the account id, so that is where the credentials are first
needed); the local stack is never started or called.
"""

from __future__ import annotations

import socket
from pathlib import Path

import papermill
import pytest

from deploy.workbook import discover
from tests.conftest import free_loopback_port

pytestmark = pytest.mark.notebooks


def failure_of(notebook: Path, out: Path, tmp_path: Path) -> papermill.PapermillExecutionError:
    """Execute ``notebook`` to ``out``; it must fail, and this is how."""
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(
            str(notebook), str(out), parameters={"REPORTS_DIR": str(tmp_path / "reports")},
            kernel_name="python3", progress_bar=False, cwd=str(notebook.parent),
        )  # fmt: skip
    return info.value


def test_stp_target_aws_alone_switches_every_notebook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_loopback_port()
    state = tmp_path / "state"
    monkeypatch.setenv("STP_TARGET", "aws")
    monkeypatch.setenv("STP_LOCAL_PORT", str(port))  # where a local stack would go: it must not
    monkeypatch.setenv("STP_STATE_DIR", str(state))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    outcomes: dict[str, str] = {}
    for notebook in discover():
        out = tmp_path / notebook.name
        error = failure_of(notebook, out, tmp_path)
        outcomes[notebook.stem] = f"{error.ename}: {error.evalue}"
    assert set(outcomes) == {p.stem for p in discover()}
    for name, error in outcomes.items():
        assert error.startswith("ConfigError"), (name, error)
        assert "no AWS credentials found" in error and "STP_PROFILE" in error, (name, error)
    with socket.socket() as sock:  # nothing was started on the local stack's port
        assert sock.connect_ex(("127.0.0.1", port)) != 0
    assert not (state / "stack.pid").exists() and not list(state.glob("**/*.log"))


def test_a_notebook_without_its_local_stack_stops_at_once_with_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbformat

    from helpers.notebook import doctor

    monkeypatch.setenv("STP_LOCAL_PORT", str(free_loopback_port()))  # no stack there
    monkeypatch.setenv("STP_STATE_DIR", str(tmp_path / "state"))
    notebook = next(p for p in discover() if p.stem == "03_produce")
    out = tmp_path / notebook.name
    error = failure_of(notebook, out, tmp_path)
    assert error.ename == "PreflightError"
    assert "00_setup" in error.evalue and "python -m deploy.local up" in error.evalue
    failed = [
        c for c in nbformat.read(out, as_version=4).cells if c.metadata.get("papermill", {}).get("exception")
    ]
    assert len(failed) == 1 and "doctor.preflight" in failed[0].source
    assert doctor.PREFLIGHT_TIMEOUT_SECONDS < 2
    assert failed[0].metadata.papermill.duration < 2  # refused at once (0.14 s); was a 39 s hang
