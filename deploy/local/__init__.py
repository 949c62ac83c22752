"""Start, stop and inspect the embedded local stack (``python -m deploy.local up|down|status``).

The stack is one background process bound to 127.0.0.1; its pid, port and log live under the
settings' ``state_dir`` (``.local/`` by default, git-ignored). ``up`` is idempotent, ``down``
stops the whole process group (Lambda workers included) and ``status`` asks the running
process for its health (the fault plan and its counters included, see :mod:`deploy.local.faults`).
``up(settings, faults=spec)`` starts the stack with a fault plan, or sets it on a running one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpers.core.errors import LocalStackError
from helpers.pipeline import aws
from helpers.pipeline.config import PROJECT_ROOT, Settings, load_settings

if TYPE_CHECKING:
    from deploy.local.faults import Spec

__all__ = ["START_TIMEOUT_SECONDS", "STOP_TIMEOUT_SECONDS", "StackStatus", "down", "status", "up"]

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
HEALTH_TIMEOUT_SECONDS = 2.0
_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class StackStatus:
    running: bool
    endpoint: str
    pid: int | None = None
    health: dict[str, Any] | None = None
    log_file: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "endpoint": self.endpoint,
            "pid": self.pid,
            "log_file": self.log_file,
            "health": self.health,
        }


def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    state = Path(settings.state_dir)
    return state, state / "stack.pid", state / "logs" / "stack.log"


def _endpoint(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.local_port}"


def _health(endpoint: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(endpoint + "/_stp/health", timeout=HEALTH_TIMEOUT_SECONDS) as resp:
            data: dict[str, Any] = json.loads(resp.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def status(settings: Settings | None = None) -> StackStatus:
    """Whether the stack answers its health check, and where."""
    s = settings or load_settings()
    _, pid_file, log_file = _paths(s)
    endpoint = _endpoint(s)
    health = _health(endpoint)
    pid = _read_pid(pid_file)
    if health is not None:
        pid = health.get("pid", pid)
    return StackStatus(health is not None, endpoint, pid, health, str(log_file))


def up(
    settings: Settings | None = None, *, timeout: float = START_TIMEOUT_SECONDS, faults: Spec | None = None
) -> StackStatus:
    """Start the stack in the background unless it is already running; wait until healthy.

    ``faults`` (a spec, JSON text or file) is the fault plan to start with; given to a stack that
    is already running, it replaces that stack's plan.
    """
    from deploy.local import faults as fault_plans

    s = settings or load_settings()
    if not s.is_local:
        raise LocalStackError("settings target is 'aws': the local stack is only for target 'local'")
    spec = fault_plans.load_spec(faults) if faults is not None else None
    current = status(s)
    if current.running:
        if spec is not None:
            fault_plans.set_faults(s, spec)
            current = status(s)
        return current
    state, pid_file, log_file = _paths(s)
    if _port_in_use(s.local_port):
        raise LocalStackError(
            f"port {s.local_port} on 127.0.0.1 is taken by another program that is not the local "
            f"stack; stop it or choose another port (STP_LOCAL_PORT=4567)"
        )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        sys.executable, "-m", "deploy.local.server",
        "--port", str(s.local_port), "--state-dir", str(state), "--region", s.region,
    ]  # fmt: skip
    if spec is not None:  # a file, not argv: plans can be long and argv is visible to everyone
        plan_file = state / "faults.json"
        state.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(spec, indent=2))
        cmd += ["--faults", str(plan_file)]
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(PROJECT_ROOT), env=env, start_new_session=True,
        )  # fmt: skip
    pid_file.write_text(str(proc.pid))
    healthy: list[StackStatus] = []

    def answered() -> bool:
        if proc.poll() is not None:
            raise LocalStackError(f"the local stack exited with code {proc.returncode}; see {log_file}")
        current = status(s)
        if current.running:
            healthy.append(current)
        return current.running

    try:
        aws.wait_until(answered, "the local stack", timeout, poll=_POLL_SECONDS)
    except TimeoutError:
        _terminate(proc.pid)
        raise LocalStackError(
            f"the local stack did not become healthy within {timeout:.0f} s; see {log_file}"
        ) from None
    return healthy[-1]


def down(settings: Settings | None = None, *, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """Stop the stack and its workers. Returns True if a running stack was stopped."""
    s = settings or load_settings()
    _, pid_file, _ = _paths(s)
    pid = _read_pid(pid_file)
    if pid is None:
        health = _health(_endpoint(s))
        pid = health.get("pid") if health else None
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    _terminate(pid, timeout)
    pid_file.unlink(missing_ok=True)
    return True


def _terminate(pid: int, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM the stack's process group, then SIGKILL what is left after ``timeout``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    own_group = pgid == os.getpgid(0)
    send = (lambda sig: os.kill(pid, sig)) if own_group else (lambda sig: os.killpg(pgid, sig))
    try:
        send(signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        aws.wait_until(lambda: not _alive(pid), f"the exit of process {pid}", timeout, poll=_POLL_SECONDS)
    except TimeoutError:
        try:
            send(signal.SIGKILL)
        except ProcessLookupError:
            return
    if not own_group:  # workers left in the group (should be none) do not outlive the stack
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
