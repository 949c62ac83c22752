"""Start, stop and inspect the embedded local stack (``python -m deploy.local up|down|status``).

The stack is one background process bound to 127.0.0.1; its pid, port and log live under the
settings' ``state_dir`` (``.local/`` by default, git-ignored). ``up`` is idempotent, ``down``
stops the whole process group (Lambda workers included) and ``status`` asks the running
process for its health (the fault plan and its counters included, see :mod:`deploy.local.faults`).
``up(settings, faults=spec)`` starts the stack with a fault plan, or sets it on a running one.

Lifetime and ownership:

* ``up(settings, owner_pid=os.getpid())`` (the workbook runner, the test session) ties the stack
  to that process: the stack stops as on SIGTERM once its owner has ended, SIGKILL included
  (:func:`watch_owner`). A stack started without an owner (``python -m deploy.local up``) stays
  up until ``down``. Lambda workers end with their stack however it ends (see
  :mod:`deploy.local.lambda_worker`).
* A stack answers for one state folder (its health says which). ``up`` refuses a port where
  another checkout's stack answers, ``status`` reports such a stack as not running (with a
  ``note``), and ``down`` only ever signals a process verified to be this state folder's stack:
  the one answering with our ``state_dir``, or, when nothing answers, the pid file's process if
  its command line names our ``--state-dir``. A stale pid file (a dead or reused pid) is removed,
  never acted on; workers a killed stack left behind are found by process group and command line.
* The endpoint: the stack listens on ``http://127.0.0.1:<local_port>``; an explicit endpoint
  (``STP_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL``) names that port (see
  :func:`helpers.pipeline.config.load_settings`), and ``up`` refuses one it cannot serve before
  anything starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from helpers.core.errors import LocalStackError
from helpers.pipeline import aws
from helpers.pipeline.config import PROJECT_ROOT, Settings, env_key, load_settings

if TYPE_CHECKING:
    from deploy.local.faults import Spec

__all__ = [
    "START_TIMEOUT_SECONDS",
    "STOP_TIMEOUT_SECONDS",
    "StackStatus",
    "StopReport",
    "down",
    "down_report",
    "reset",
    "status",
    "up",
    "watch_owner",
]

START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
HEALTH_TIMEOUT_SECONDS = 2.0
OWNER_CHECK_SECONDS = 0.5
_POLL_SECONDS = 0.05
_EXIT_POLL_SECONDS = 0.05
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_SERVER_MODULE = "deploy.local.server"
_WORKER_SCRIPT = "lambda_worker.py"


@dataclass(frozen=True)
class StackStatus:
    running: bool
    endpoint: str
    pid: int | None = None
    health: dict[str, Any] | None = None
    log_file: str | None = None
    note: str | None = None  # e.g. another checkout's stack answers on this port
    saved: dict[str, Any] | None = None  # the state folder's saved state (deploy.local.persist)

    def to_dict(self) -> dict[str, Any]:
        data = {
            "running": self.running,
            "endpoint": self.endpoint,
            "pid": self.pid,
            "log_file": self.log_file,
            "saved_state": self.saved,
            "health": self.health,
        }
        return {**data, "note": self.note} if self.note else data


@dataclass(frozen=True)
class StopReport:
    """What ``down`` did: ``stopped`` a running stack or not, and a sentence saying what."""

    stopped: bool
    message: str


def _paths(settings: Settings) -> tuple[Path, Path, Path]:
    state = Path(os.path.abspath(settings.state_dir))
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


def _recorded_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_pid(pid_file: Path) -> int | None:
    pid = _recorded_pid(pid_file)
    return pid if pid is not None and _alive(pid) else None


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _same_folder(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _is_ours(health: dict[str, Any], state: Path, recorded: int | None) -> bool:
    """Whether the stack that answered ``health`` keeps its state in ``state``.

    A stack from before ``state_dir`` was in the health answer is ours only if its pid is the one
    our pid file recorded.
    """
    theirs = health.get("state_dir")
    if theirs is None:
        return recorded is not None and health.get("pid") == recorded
    return _same_folder(str(theirs), state)


def _foreign(settings: Settings, health: dict[str, Any]) -> str:
    theirs = health.get("state_dir", "unknown (an older stack)")
    return (
        f"port {settings.local_port} on 127.0.0.1 answers for the local stack of another checkout "
        f"(state folder {theirs}, pid {health.get('pid')}), not for this one ({_paths(settings)[0]})"
    )


def _foreign_fix(settings: Settings, health: dict[str, Any]) -> str:
    theirs = health.get("state_dir", "that checkout")
    return (
        f"use another port for this checkout (e.g. {_another_port(settings)}), or stop that stack with "
        f"`python -m deploy.local down` run from the checkout that owns {theirs}"
    )


def _another_port(settings: Settings) -> str:
    """``VARIABLE=value`` moving this stack to a free port (an explicit endpoint names the port)."""
    free = _a_free_port()
    if settings.endpoint_url:
        return f"{_endpoint_source(settings)}=http://127.0.0.1:{free}"
    return f"{env_key('local_port')}={free}"


def _a_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status(settings: Settings | None = None) -> StackStatus:
    """Whether this state folder's stack answers its health check, and where.

    A stack of another state folder answering on the port is not ours: ``running`` is False and
    ``note`` says whose it is (``python -m deploy.local status`` exits 3 and prints the note).
    """
    s = settings or load_settings()
    return _status(s, _health(_endpoint(s)))


def _status(s: Settings, health: dict[str, Any] | None) -> StackStatus:
    from deploy.local.persist import saved_state

    state, pid_file, log_file = _paths(s)
    endpoint = _endpoint(s)
    pid = _read_pid(pid_file)
    saved = saved_state(state)
    if health is not None and not _is_ours(health, state, pid):
        return StackStatus(False, endpoint, None, None, str(log_file), note=_foreign(s, health), saved=saved)
    if health is not None:
        pid = health.get("pid", pid)
    return StackStatus(health is not None, endpoint, pid, health, str(log_file), saved=saved)


def reset(settings: Settings | None = None) -> bool:
    """Forget the saved state of a stopped stack (the next ``up`` starts empty); True if any was saved.

    Refused while this state folder's stack runs: it would save its state again.
    """
    from deploy.local.persist import reset as forget

    s = settings or load_settings()
    current = status(s)
    if current.running:
        raise LocalStackError(
            f"the local stack of {_paths(s)[0]} is running (pid {current.pid}): stop it first "
            "(python -m deploy.local down), then reset"
        )
    return forget(_paths(s)[0])


def _endpoint_source(settings: Settings) -> str:
    """The variable an explicit endpoint most likely came from, for messages."""
    for name in (env_key("endpoint_url"), "AWS_ENDPOINT_URL"):
        if os.environ.get(name) == settings.endpoint_url:
            return name
    return "endpoint_url"


def _check_endpoint(settings: Settings) -> None:
    """Refuse, before anything starts, an explicit endpoint the stack would not be serving."""
    url = settings.endpoint_url
    if not url:
        return
    source = _endpoint_source(settings)
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        port = None
    problem = ""
    if parsed.scheme != "http":
        problem = "the local stack serves plain http"
    elif parsed.hostname not in ("127.0.0.1", "localhost"):
        problem = "the local stack listens on 127.0.0.1 only"
    elif port is None:
        problem = "it names no port"
    elif parsed.path not in ("", "/") or parsed.query:
        problem = "the local stack serves the root path only"
    elif port != settings.local_port:
        port_source = env_key("local_port") if env_key("local_port") in os.environ else "local_port"
        raise LocalStackError(
            f"{source}={url!r} names port {port} but {port_source} is {settings.local_port}: the stack "
            f"would listen where the clients do not call. Fix: unset one of them, or make them agree "
            f"({source}=http://127.0.0.1:{settings.local_port} or {env_key('local_port')}={port})"
        )
    if problem:
        raise LocalStackError(
            f"{source}={url!r} cannot be the local stack's endpoint: {problem}. Fix: set {source} to "
            f"http://127.0.0.1:<port> (the stack then starts on that port), or unset it"
        )


def up(
    settings: Settings | None = None,
    *,
    timeout: float = START_TIMEOUT_SECONDS,
    faults: Spec | None = None,
    owner_pid: int | None = None,
    iam: bool | None = None,
) -> StackStatus:
    """Start the stack in the background unless it is already running; wait until healthy.

    ``faults`` (a spec, JSON text or file) is the fault plan to start with; given to a stack that
    is already running, it replaces that stack's plan. ``owner_pid``: a stack this call starts
    stops once that process has ended, however it ended (a runner passes ``os.getpid()``); a
    stack that is already running keeps its own lifetime. ``iam``: enforce IAM policies (None:
    ``STP_LOCAL_IAM``, on when unset; a running stack keeps its own). Refuses (:class:`LocalStackError`) a
    port where another state folder's stack answers, naming that folder.
    """
    from deploy.local import faults as fault_plans

    s = settings or load_settings()
    if not s.is_local:
        raise LocalStackError("settings target is 'aws': the local stack is only for target 'local'")
    _check_endpoint(s)
    spec = fault_plans.load_spec(faults) if faults is not None else None
    state, pid_file, log_file = _paths(s)
    health = _health(_endpoint(s))  # asked once: a port that accepts and never answers costs the timeout
    current = _status(s, health)
    if health is not None and current.note is not None:
        raise LocalStackError(f"{current.note}. Fix: {_foreign_fix(s, health)}")
    if current.running:
        if spec is not None:
            fault_plans.set_faults(s, spec)
            current = status(s)
        return current
    if _port_in_use(s.local_port):
        raise LocalStackError(
            f"port {s.local_port} on 127.0.0.1 is taken by another program that is not the local "
            f"stack; stop it or choose another port ({_another_port(s)})"
        )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")])),
    }
    cmd = [
        sys.executable, "-m", _SERVER_MODULE,
        "--port", str(s.local_port), "--state-dir", str(state), "--region", s.region,
    ]  # fmt: skip
    if iam is not None:
        cmd.append("--iam" if iam else "--no-iam")
    if owner_pid is not None:
        cmd += ["--owner-pid", str(owner_pid)]
        # Linux's parent-death signal follows the forking *thread*: only the main thread lives as
        # long as the process
        if owner_pid == os.getpid() and threading.current_thread() is threading.main_thread():
            cmd.append("--owner-pdeathsig")
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
    """Stop this state folder's stack and its workers. Returns True if a running stack was stopped."""
    return down_report(settings, timeout=timeout).stopped


def down_report(settings: Settings | None = None, *, timeout: float = STOP_TIMEOUT_SECONDS) -> StopReport:
    """:func:`down`, saying what it did. Signals only a process verified to be our stack."""
    s = settings or load_settings()
    state, pid_file, _ = _paths(s)
    recorded = _recorded_pid(pid_file)
    health = _health(_endpoint(s))
    if health is not None and _is_ours(health, state, recorded) and isinstance(health.get("pid"), int):
        pid = int(health["pid"])
        _terminate(pid, timeout)
        pid_file.unlink(missing_ok=True)
        left = _kill_leftover_workers(pid, state)
        return StopReport(True, f"local stack stopped (pid {pid})" + _workers_note(left))
    notes = [_foreign(s, health) + "; left running"] if health is not None else []
    if recorded is None:
        return StopReport(False, "; ".join(["local stack was not running", *notes]))
    if _alive(recorded) and _runs_our_stack(recorded, state):  # ours, but not answering (hung)
        _terminate(recorded, timeout)
        pid_file.unlink(missing_ok=True)
        left = _kill_leftover_workers(recorded, state)
        message = f"local stack stopped (pid {recorded}, it was not answering)" + _workers_note(left)
        return StopReport(True, "; ".join([message, *notes]))
    left = _kill_leftover_workers(recorded, state)
    pid_file.unlink(missing_ok=True)
    if _alive(recorded):
        message = f"removed a stale pid file: pid {recorded} is another program now, left alone"
    else:
        message = f"local stack was not running (pid {recorded} had ended); removed its pid file"
    return StopReport(False, "; ".join([message + _workers_note(left), *notes]))


def _workers_note(killed: list[int]) -> str:
    return f"; killed {len(killed)} leftover Lambda worker(s) {killed}" if killed else ""


def _cmdline(pid: int) -> list[str] | None:
    """The argv of ``pid`` (``/proc``, else ``ps`` split on spaces), None when unreadable."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self").exists():
        try:
            raw = proc.read_bytes()
        except OSError:
            return None
        return [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    try:
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.split() or None


def _runs_our_stack(pid: int, state: Path) -> bool:
    """Whether ``pid``'s command line is the stack server with ``--state-dir`` ``state``."""
    argv = _cmdline(pid)
    if not argv or _SERVER_MODULE not in argv:
        return False
    with contextlib.suppress(ValueError, IndexError):
        folder = Path(argv[argv.index("--state-dir") + 1])
        return _same_folder(folder if folder.is_absolute() else PROJECT_ROOT / folder, state)
    return False


def _kill_leftover_workers(stack_pid: int, state: Path) -> list[int]:
    """SIGKILL the Lambda workers of the (ended) stack ``stack_pid``: processes in its process group
    running the worker script on code under ``state`` (Linux ``/proc``; elsewhere workers end
    themselves within half a second of their stack, see :mod:`deploy.local.lambda_worker`)."""
    killed: list[int] = []
    proc = Path("/proc")
    if not (proc / "self").exists():
        return killed
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in (stack_pid, os.getpid()):
            continue
        pid = int(entry.name)
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            state_code, pgrp = fields[0], int(fields[2])
        except (OSError, ValueError, IndexError):
            continue
        if pgrp != stack_pid or state_code == "Z":
            continue
        argv = _cmdline(pid) or []
        if not any(a.endswith(_WORKER_SCRIPT) for a in argv):
            continue
        if not any(_under(a, state) for a in argv):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _under(arg: str, state: Path) -> bool:
    if not arg.startswith(os.sep):
        return False
    with contextlib.suppress(OSError, ValueError):
        return Path(arg).resolve().is_relative_to(state.resolve())
    return False


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
        aws.wait_until(
            lambda: not _alive(pid), f"the exit of process {pid}", timeout, poll=_EXIT_POLL_SECONDS
        )
    except TimeoutError:
        try:
            send(signal.SIGKILL)
        except ProcessLookupError:
            return
    if not own_group:  # workers left in the group (should be none) do not outlive the stack
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running process.

    Our own child counts until it is reaped: its leader shows ``Z`` while the other threads of a
    large process are still being torn down, and waitpid reaps it only once they are. Another
    parent's zombie is not alive (we cannot reap it).
    """
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
        ours = True
    except ChildProcessError:
        ours = False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not ours:
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                return False
    return True


# --- inside the stack process ----------------------------------------------------------------------


def _owner_gone(owner: int, parent_was_owner: bool) -> bool:
    if parent_was_owner:  # re-parented: the owner has ended, even if it is a zombie nobody reaps
        return os.getppid() != owner
    return not _alive(owner)


def watch_owner(owner: int, stop: threading.Event, *, pdeathsig: bool = False) -> None:
    """Set ``stop`` once process ``owner`` has ended, however it ended (SIGKILL included); the stack
    process then stops as on SIGTERM. Checked every :data:`OWNER_CHECK_SECONDS` by a daemon thread.

    ``pdeathsig`` also asks Linux for SIGTERM the moment our parent dies: right only when the
    parent started us from its main thread, since Linux sends it when the forking *thread* ends.
    """
    parent_was_owner = os.getppid() == owner
    if pdeathsig and parent_was_owner and sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if _owner_gone(owner, parent_was_owner):  # died before the signal was asked for
        stop.set()

    def watch() -> None:
        while not stop.wait(OWNER_CHECK_SECONDS):
            if _owner_gone(owner, parent_was_owner):
                stop.set()

    threading.Thread(target=watch, name="owner-watchdog", daemon=True).start()
