"""One worker process: a warm execution environment running a function's deployed zip.

A worker is ``python -I -S -u deploy/local/lambda_worker.py`` started by the stack (so it is in
the stack's process group and dies with ``down``), with the function's environment, the
extracted zip as working directory and first on ``sys.path``, then the folder made by
:func:`build_runtime_packages`, then the standard library: no site-packages, so what imports
locally imports on AWS. It runs invocations one at a time, reads the function's output line by
line and logs each invocation to CloudWatch Logs; on a timeout it is killed, as Lambda does.
:mod:`.pool` decides when workers start and stop.

:meth:`Worker.kill` may be called more than once and from several threads (the invoking thread
when the worker dies, the pool when it releases or stops it): the process is signalled and
reaped, and the response pipe closed, exactly once. Closing a descriptor twice is not harmless:
between the two closes the number can be reused by another worker's pipe (or any file), which
the second close would then close under its owner (``EBADF`` later, or a silent wrong read).
:meth:`Worker.signal_kill` (the fault injector's kills) only sends SIGKILL; the invoking thread
sees the death and cleans up.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from deploy.local import access
from deploy.local._lambda import logs
from deploy.local._lambda.models import LATEST, FunctionSnapshot, Outcome
from deploy.package import LAMBDA_RUNTIME_PACKAGES

log = logging.getLogger(__name__)

WORKER_SCRIPT = Path(__file__).resolve().parent.parent / "lambda_worker.py"
END_MARKER = "\x00STP-END\x00"
INIT_TIMEOUT_SECONDS = 10.0  # Lambda's init phase limit
MARKER_WAIT_SECONDS = 2.0
KILL_WAIT_SECONDS = 5.0
_REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _runtime_distributions(root: str = "boto3") -> list[importlib.metadata.Distribution]:
    """The installed distribution ``root`` and, recursively, those it requires (extras left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [root]
    while todo:
        dist = importlib.metadata.distribution(todo.pop())
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name in found:
            continue
        found[name] = dist
        for requirement in dist.requires or []:
            match = _REQUIREMENT_NAME.match(requirement)
            if match and "extra ==" not in requirement:
                todo.append(match.group(0))
    return list(found.values())


def build_runtime_packages(folder: Path) -> Path:
    """Make ``folder``: symlinks to what the AWS Python runtime provides besides the function's code.

    That is :data:`deploy.package.LAMBDA_RUNTIME_PACKAGES` (boto3 and its dependencies) from the
    stack's own environment, with their ``*.dist-info`` so ``importlib.metadata`` answers as on
    AWS. Rebuilt at every start (the environment may have changed), atomically.
    """
    links: dict[str, Path] = {}
    for dist in _runtime_distributions():
        for top in {file.parts[0] for file in dist.files or []}:
            module = top.removesuffix(".py")
            if top.endswith(".dist-info") or module in LAMBDA_RUNTIME_PACKAGES:
                links[top] = Path(str(dist.locate_file(top)))
            elif module.isidentifier() and module != "__pycache__":
                log.warning("boto3 needs %r, missing from LAMBDA_RUNTIME_PACKAGES", module)
    missing = set(LAMBDA_RUNTIME_PACKAGES) - {top.removesuffix(".py") for top in links}
    if missing:
        raise RuntimeError(f"not installed in the stack's environment: {sorted(missing)}")
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, target in sorted(links.items()):
        (tmp / name).symlink_to(target)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


_warned_runtimes: set[str] = set()
_warned_lock = threading.Lock()


def interpreter_for(runtime: str, path: str | None = None) -> tuple[str, str]:
    """The Python that runs a function of ``runtime`` (e.g. ``python3.13``) and how it matches.

    The host's own interpreter when its version is the runtime's; else ``python3.X`` from
    ``path`` (default: ``PATH``) when one is installed; else the host's, with a warning logged
    once per runtime (a handler that imports only what the runtime has runs the same on both,
    but newer syntax or removed modules would only show on AWS).
    """
    host = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if not re.fullmatch(r"python3\.\d+", runtime or "") or runtime == host:
        return sys.executable, f"{runtime or 'python'} (local)"
    found = shutil.which(runtime, path=path)
    if found and _runs_as(found, runtime.removeprefix("python")):
        return found, f"{runtime} (local: {found})"
    with _warned_lock:
        first = runtime not in _warned_runtimes
        _warned_runtimes.add(runtime)
    if first:
        log.warning(
            "functions declare %s, which is not installed here: they run on the host's %s; "
            "install %s (on PATH) to run them under the runtime's own version",
            runtime, host, runtime,
        )  # fmt: skip
    return sys.executable, f"{runtime} (local: on {host}, {runtime} not installed)"


@functools.cache
def _runs_as(interpreter: str, version: str) -> bool:
    """True when ``interpreter`` starts and is Python ``version`` (a pyenv shim of an inactive
    version, or a broken install, is on PATH but does not run)."""
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    try:
        done = subprocess.run(
            [interpreter, "-I", "-S", "-c", probe], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == version


def worker_environment(
    snap: FunctionSnapshot, endpoint: str, code_dir: Path, log_stream: str
) -> dict[str, str]:
    """The process environment of a worker: like Lambda's, pointed at the local stack."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TZ": ":UTC",
        "AWS_ENDPOINT_URL": endpoint,
        # never let a developer's ~/.aws files leak into a local function
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    env.update(dict(snap.environment))
    # reserved on AWS: the execution role's credentials (dummies when the stack enforces no IAM)
    env.update(access.function_credentials(snap.role, snap.name, snap.region))
    env.update(
        {
            "AWS_REGION": snap.region,
            "AWS_DEFAULT_REGION": snap.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{snap.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": snap.name,
            "AWS_SDK_UA_APP_ID": snap.name,  # the stack's usage counts name the function (deploy.local.usage)
            "AWS_LAMBDA_FUNCTION_VERSION": LATEST,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(snap.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": snap.log_group,
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "LAMBDA_TASK_ROOT": str(code_dir),
            "LAMBDA_RUNTIME_DIR": str(Path(sys.executable).parent),
            "_HANDLER": snap.handler,
        }
    )
    return env


class Worker:
    """One worker process and the pipes to it."""

    def __init__(
        self,
        snap: FunctionSnapshot,
        code_dir: Path,
        endpoint: str,
        sink: logs.LogSink,
        exclude: list[str],
        runtime_packages: Path,
    ):
        self.snap = snap
        self.code_dir = code_dir
        self.sink = sink
        self.log_stream = logs.new_stream_name()
        self.created = time.monotonic()
        self.last_used = self.created
        self.invocations = 0
        self.init_ms: float | None = None
        self._init_events: list[logs.LogEvent] = []
        self._lines: list[logs.LogEvent] = []
        self._markers: set[str] = set()
        self._eof = False
        self._cond = threading.Condition()
        self._buffer = bytearray()
        resp_r, resp_w = os.pipe()
        interpreter, self.runtime_version = interpreter_for(snap.runtime)
        cmd = [
            interpreter,
            "-I",
            "-S",  # no site-packages: the worker's path is the code, runtime_packages, the stdlib
            "-u",
            str(WORKER_SCRIPT),
            str(code_dir),
            snap.handler,
            str(resp_w),
            str(runtime_packages),
            json.dumps(exclude),
            str(os.getpid()),  # the worker ends itself when its parent is no longer this stack
        ]
        try:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(resp_w,),
                env=worker_environment(snap, endpoint, code_dir, self.log_stream),
                cwd=str(code_dir),
                close_fds=True,
            )
        except BaseException:
            os.close(resp_r)
            raise
        finally:
            os.close(resp_w)
        self._resp_fd = resp_r
        self._kill_lock = threading.Lock()
        self._killed = False
        self._readers = 0  # threads inside _read_message: the fd is closed after they leave
        self._fd_closed = False
        self._reader = threading.Thread(
            target=self._read_output, name=f"lambda-log-{self.proc.pid}", daemon=True
        )
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    # --- output -------------------------------------------------------------------------
    def _read_output(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        for raw in stream:
            text = raw.decode("utf-8", "replace").rstrip("\n")
            before, marked, tag = text.partition(END_MARKER)  # output without a final newline
            with self._cond:
                if before or not marked:
                    self._lines.append((logs.now_ms(), before.replace("\r", "\n")))
                if marked:
                    self._markers.add(tag)
                    self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()
        stream.close()

    def _take_lines(self, marker: str | None, timeout: float = MARKER_WAIT_SECONDS) -> list[logs.LogEvent]:
        """The output lines up to ``marker`` (or everything once the process is gone)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while marker is not None and marker not in self._markers and not self._eof:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            self._markers.discard(marker or "")
            lines, self._lines = self._lines, []
        return lines

    def _read_message(self, deadline: float) -> dict[str, Any] | None:
        """The next JSON line from the worker; None on EOF; {} when ``deadline`` passes."""
        with self._kill_lock:
            if self._killed:
                return None
            self._readers += 1
        try:
            return self._next_message(deadline)
        finally:
            with self._kill_lock:
                self._readers -= 1
                if self._killed:
                    self._close_fd()

    def _next_message(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            ready, _, _ = select.select([self._resp_fd], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(self._resp_fd, 1 << 16)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer = bytearray(rest)
        message: dict[str, Any] = json.loads(line)
        return message

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> dict[str, Any] | None:
        """Wait for the handler module to load; returns the init error, if any."""
        started = self.created
        message = self._read_message(time.monotonic() + INIT_TIMEOUT_SECONDS)
        self.init_ms = (time.monotonic() - started) * 1000
        self._init_events = [(logs.now_ms(), f"INIT_START Runtime Version: {self.runtime_version}")]
        if not message:
            reason = "timed out" if message == {} else "exited"
            self.kill()
            self._init_events += self._take_lines(None)
            return {
                "errorType": "Runtime.Unknown" if message is None else "Sandbox.Timedout",
                "errorMessage": f"Init {reason} after {self.init_ms / 1000:.2f} seconds",
            }
        self._init_events += self._take_lines("init")
        error: dict[str, Any] | None = None if message.get("ok") else message.get("error", {})
        return error

    def kill(self) -> None:
        """Stop the process and release its pipes; idempotent and thread-safe (see the module doc)."""
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(KILL_WAIT_SECONDS)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not wait for much
                log.error("worker %s did not exit after SIGKILL", self.pid)
            with contextlib.suppress(OSError):
                if self.proc.stdin:
                    self.proc.stdin.close()
            self._close_fd()
        self._reader.join(KILL_WAIT_SECONDS)

    def _close_fd(self) -> None:
        """Close the response pipe once, and never under a thread reading it (lock held)."""
        if self._fd_closed or self._readers:
            return
        self._fd_closed = True
        try:
            os.close(self._resp_fd)
        except OSError:  # pragma: no cover - closed exactly once, so this would be a bug
            log.exception("closing the response pipe of worker %s failed", self.pid)

    def signal_kill(self) -> bool:
        """SIGKILL the process and nothing else; False if it was already dead or being killed."""
        with self._kill_lock:
            if self._killed or self.proc.poll() is not None:
                return False
            self.proc.send_signal(signal.SIGKILL)
            return True

    # --- invocation ---------------------------------------------------------------------
    def invoke(self, event: Any, request_id: str, invoked_arn: str) -> Outcome:
        """Run one invocation; kills the worker on timeout or when it dies; logs it."""
        first = self.invocations == 0
        self.invocations += 1
        started = time.monotonic()
        start_ms = logs.now_ms()
        request = {
            "request_id": request_id,
            "event": event,
            "deadline_ms": start_ms + int(self.snap.timeout * 1000),
            "invoked_function_arn": invoked_arn,
        }
        message: dict[str, Any] | None
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            message = self._read_message(started + self.snap.timeout)
        except (OSError, ValueError):  # broken pipe: the worker is gone
            message = None
        duration = (time.monotonic() - started) * 1000
        if message:
            outcome, extra = self._answered(message, request_id, duration), list[str]()
            lines = self._take_lines(request_id)
            max_memory = int(message.get("max_memory_mb", 0))
        else:
            self.kill()
            lines = self._take_lines(None)
            outcome, extra = self._lost(message == {}, request_id, duration)
            max_memory = 0
        outcome.init_ms = self.init_ms if first else None
        self._log(outcome, start_ms, lines, extra, max_memory, first)
        self.last_used = time.monotonic()
        return outcome

    @staticmethod
    def _answered(message: dict[str, Any], request_id: str, duration: float) -> Outcome:
        duration = float(message.get("duration_ms", duration))
        if message.get("ok"):
            return Outcome(request_id, "ok", str(message.get("payload", "null")), duration_ms=duration)
        return Outcome(request_id, "error", error=message.get("error") or {}, duration_ms=duration)

    def _lost(self, timed_out: bool, request_id: str, duration: float) -> tuple[Outcome, list[str]]:
        """The outcome when the worker did not answer: timed out (killed) or died."""
        if timed_out:
            message = f"RequestId: {request_id} Error: Task timed out after {self.snap.timeout:.2f} seconds"
            error = {"errorType": "Sandbox.Timedout", "errorMessage": message}
            return Outcome(request_id, "timeout", error=error, duration_ms=duration), [
                logs.timeout_line(request_id, self.snap.timeout)
            ]
        code = self.proc.returncode
        why = f"signal: {-code}" if code is not None and code < 0 else f"exit status {code}"
        message = f"RequestId: {request_id} Error: Runtime exited with error: {why}"
        error = {"errorType": "Runtime.ExitError", "errorMessage": message}
        return Outcome(request_id, "crash", error=error, duration_ms=duration), [message]

    def _log(
        self,
        outcome: Outcome,
        start_ms: int,
        lines: list[logs.LogEvent],
        extra: list[str],
        max_memory: int,
        first: bool,
    ) -> None:
        """START, the function's lines, END and REPORT to CloudWatch Logs (INIT lines first)."""
        snap, rid = self.snap, outcome.request_id
        status = {"timeout": "timeout", "crash": "error"}.get(outcome.status)
        now = logs.now_ms()
        report = logs.report_line(
            rid, outcome.duration_ms, snap.memory_mb, max_memory, outcome.init_ms, status
        )
        events = list(self._init_events) if first else []
        events += [(start_ms, logs.start_line(rid)), *lines, *((now, text) for text in extra)]
        events += [(now, logs.end_line(rid)), (now, report)]
        self.sink.write(snap.account, snap.region, snap.log_group, self.log_stream, events)
        outcome.log_lines = [text for _, text in events]

    def describe(self, state: str) -> dict[str, Any]:
        return {
            "function": self.snap.name,
            "pid": self.pid,
            "state": state,
            "invocations": self.invocations,
            "init_ms": round(self.init_ms or 0, 1),
            "age_seconds": round(time.monotonic() - self.created, 1),
            "code_sha256": self.snap.code_digest,
            "log_stream": self.log_stream,
        }
