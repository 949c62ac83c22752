"""Process hygiene of the local stack: no orphans, owned stacks end with their owner, one stack per folder.

Every test starts its own stacks on free loopback ports with temporary state folders, and waits
a bounded time only.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from deploy.local import down, down_report, status, up
from helpers.core.errors import LocalStackError
from helpers.pipeline import aws
from helpers.pipeline.config import PROJECT_ROOT, Settings, load_settings

pytestmark = pytest.mark.integration

HANDLER = """
import os, time


def handler(event, context):
    return {"pid": os.getpid()}


def busy(event, context):
    with open(event["pid_file"], "w") as fh:
        fh.write(str(os.getpid()))
    time.sleep(20)
"""


def _running(pid: int) -> bool:
    """A live process (not a zombie waiting to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _gone_within(pids: list[int], seconds: float) -> float | None:
    """Seconds until none of ``pids`` runs, or None if some still run after ``seconds``."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if not any(_running(p) for p in pids):
            return time.monotonic() - start
        time.sleep(0.05)
    return None


def _workers_of(stack_pid: int) -> list[int]:
    """Processes in the stack's process group running the Lambda worker script."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == stack_pid:
            continue
        try:
            pgrp = int((entry / "stat").read_text().rpartition(")")[2].split()[2])
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if pgrp == stack_pid and any(a.endswith(b"lambda_worker.py") for a in argv):
            found.append(int(entry.name))
    return found


@pytest.fixture
def settings_for(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Callable[..., Settings]]:
    """Settings of a fresh state folder (``name``) on ``port`` (a free one by default); stopped after."""
    made: list[Settings] = []

    def make(name: str = "state", port: int | None = None) -> Settings:
        s = load_settings(environ={}, local_port=port or free_port(), state_dir=str(tmp_path / name))
        made.append(s)
        return s

    yield make
    for s in reversed(made):
        down(s)


def _deploy(s: Settings, handler: str) -> str:
    lam, iam = aws.client("lambda", s), aws.client("iam", s)
    role = iam.create_role(RoleName=f"hygiene-{handler}", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fn.py", HANDLER)
    lam.create_function(
        FunctionName=f"hygiene-{handler}", Runtime="python3.11", Role=role, Handler=f"fn.{handler}",
        Code={"ZipFile": buffer.getvalue()}, Timeout=30,
    )  # fmt: skip
    return f"hygiene-{handler}"


def _warm_worker(s: Settings) -> int:
    """Deploy a one-line function, invoke it; the pid of its (warm, idle) worker."""
    answer = aws.client("lambda", s).invoke(FunctionName=_deploy(s, "handler"), Payload=b"{}")
    return int(json.loads(answer["Payload"].read())["pid"])


def _busy_worker(s: Settings, pid_file: Path) -> int:
    """Deploy a function that sleeps 20 s, invoke it asynchronously; the pid of its (busy) worker."""
    event = json.dumps({"pid_file": str(pid_file)}).encode()
    aws.client("lambda", s).invoke(FunctionName=_deploy(s, "busy"), InvocationType="Event", Payload=event)
    deadline = time.monotonic() + 15
    while not (pid_file.is_file() and pid_file.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return int(pid_file.read_text())


# --- workers die with the stack ------------------------------------------------------------------


def test_sigkill_of_the_stack_leaves_no_worker_and_down_cleans_up(settings_for, tmp_path) -> None:
    # GIVEN a stack with a warm, idle Lambda worker and one busy in a 20 s handler
    s = settings_for()
    stack = up(s)
    assert stack.pid is not None
    workers = [_warm_worker(s), _busy_worker(s, tmp_path / "busy.pid")]
    assert all(_running(w) for w in workers) and set(workers) <= set(_workers_of(stack.pid))
    # WHEN the stack is SIGKILLed
    os.kill(stack.pid, signal.SIGKILL)
    # THEN both workers end by themselves within 2 s (EOF on stdin; the busy one watches its
    # parent), leaving no PPID-1 orphan
    took = _gone_within(workers, 2.0)
    assert took is not None, f"workers {[w for w in workers if _running(w)]} outlived their stack by 2 s"
    print(f"workers gone {took:.2f} s after SIGKILL of the stack")
    # AND down cleans up after the dead stack and says so
    report = down_report(s)
    assert not report.stopped and "had ended" in report.message and "removed its pid file" in report.message
    assert not (Path(s.state_dir) / "stack.pid").exists()


def test_down_kills_workers_a_killed_stack_left_behind(settings_for, tmp_path) -> None:
    """A leftover worker (e.g. one without the watchdog) in a dead stack's group is killed by down."""
    s = settings_for()
    state = Path(s.state_dir)
    code = state / "lambda" / "fn"
    code.mkdir(parents=True)
    script = code / "lambda_worker.py"
    script.write_text("import time\ntime.sleep(30)\n")
    spawn = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, {str(script)!r}]); time.sleep(30)"
    )
    # a stand-in "stack": a session leader whose process group holds the leftover worker
    stand_in = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True)
    try:
        (state / "stack.pid").write_text(str(stand_in.pid))
        deadline = time.monotonic() + 5
        while not _workers_of(stand_in.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        [leftover] = _workers_of(stand_in.pid)
        stand_in.kill()
        stand_in.wait(5)
        report = down_report(s)
        assert f"killed 1 leftover Lambda worker(s) [{leftover}]" in report.message
        assert _gone_within([leftover], 2.0) is not None
    finally:
        stand_in.kill()
        stand_in.wait(5)


def test_a_stale_pid_file_never_kills_an_unrelated_process(settings_for) -> None:
    s = settings_for()
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        Path(s.state_dir).mkdir(parents=True)
        (Path(s.state_dir) / "stack.pid").write_text(str(unrelated.pid))  # a reused pid
        report = down_report(s)
        assert not report.stopped and "stale pid file" in report.message
        assert unrelated.poll() is None
        assert not (Path(s.state_dir) / "stack.pid").exists()
    finally:
        unrelated.kill()
        unrelated.wait(5)


# --- an owned stack ends with its owner ----------------------------------------------------------

RUNNER = """
import os, sys, threading, time
from deploy.local import up
from helpers.pipeline.config import load_settings

s = load_settings(environ={{}}, local_port={port}, state_dir={state!r})
started = []
start = lambda: started.append(up(s, owner_pid=os.getpid() if {owned} else None))
if {threaded}:  # from a thread that ends at once: Linux's parent-death signal must not stop the stack
    thread = threading.Thread(target=start)
    thread.start()
    thread.join()
else:
    start()
print(started[0].pid, flush=True)
time.sleep(float(sys.argv[1]))
"""


def _runner(
    s: Settings, *, owned: bool, sleep: float, threaded: bool = False
) -> tuple[subprocess.Popen[str], int]:
    """A runner-like process that starts a stack, prints its pid and sleeps ``sleep`` seconds."""
    source = RUNNER.format(port=s.local_port, state=s.state_dir, owned=owned, threaded=threaded)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(source), str(sleep)],
        cwd=str(PROJECT_ROOT), stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # bounded: up() gives up after START_TIMEOUT_SECONDS
    assert line.strip().isdigit(), f"the runner did not start a stack: {line!r}"
    return proc, int(line)


@pytest.mark.parametrize("threaded", [False, True], ids=["main-thread", "short-lived-thread"])
def test_a_stack_owned_by_a_runner_ends_when_the_runner_is_sigkilled(settings_for, threaded: bool) -> None:
    s = settings_for()
    runner, stack_pid = _runner(s, owned=True, sleep=60, threaded=threaded)
    if threaded:
        time.sleep(1.0)  # the starting thread has ended: the stack is still up (the owner is)
    assert status(s).running
    runner.kill()
    runner.wait(5)
    took = _gone_within([stack_pid], 5.0)
    assert took is not None, f"stack {stack_pid} outlived its SIGKILLed owner by 5 s"
    print(f"owned stack gone {took:.2f} s after SIGKILL of its owner")
    assert not status(s).running
    assert not (Path(s.state_dir) / "stack.pid").exists()  # it stopped gracefully and tidied up


def test_a_plainly_started_stack_survives_its_starter(settings_for) -> None:
    s = settings_for()
    runner, stack_pid = _runner(s, owned=False, sleep=0)
    assert runner.wait(10) == 0
    time.sleep(1.5)  # three owner checks' worth
    assert _running(stack_pid) and status(s).running and status(s).pid == stack_pid


# --- one stack per state folder ------------------------------------------------------------------


def test_a_second_folder_on_the_same_port_is_refused_and_cannot_stop_the_first(settings_for) -> None:
    first = settings_for("first")
    second = settings_for("second", port=first.local_port)
    stack = up(first)
    # up names the first checkout's state folder and the fix
    with pytest.raises(LocalStackError) as info:
        up(second)
    message = str(info.value)
    assert str(Path(first.state_dir).resolve()) in message
    assert "STP_LOCAL_PORT=" in message and "python -m deploy.local down" in message
    # status does not claim it; down leaves it running
    other = status(second)
    assert not other.running and other.note and str(Path(first.state_dir).resolve()) in other.note
    report = down_report(second)
    assert not report.stopped and "left running" in report.message
    assert status(first).running and status(first).pid == stack.pid
    assert status(first).health["state_dir"] == str(Path(first.state_dir).resolve())


def test_the_cli_status_of_a_foreign_stack_exits_3_with_a_note(settings_for) -> None:
    first = settings_for("first")
    up(first)
    env = {
        **os.environ, "PYTHONPATH": str(PROJECT_ROOT),
        "STP_LOCAL_PORT": str(first.local_port), "STP_STATE_DIR": str(Path(first.state_dir).parent / "other"),
    }  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "deploy.local", "status"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 3
    answer = json.loads(out.stdout)
    assert answer["running"] is False and "another checkout" in answer["note"]


# --- one endpoint ------------------------------------------------------------------------------


def test_up_listens_where_stp_endpoint_url_points(tmp_path, free_port, monkeypatch) -> None:
    port = free_port()
    monkeypatch.setenv("STP_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("STP_STATE_DIR", str(tmp_path / "state"))
    s = load_settings()
    assert s.local_port == port
    try:
        stack = up(s)
        assert stack.endpoint == f"http://127.0.0.1:{port}" and stack.health["endpoint"] == stack.endpoint
        assert aws.client("sqs", s).list_queues().get("QueueUrls", []) == []  # the clients reach it
        # another checkout with the same endpoint is told to change that variable, not STP_LOCAL_PORT
        monkeypatch.setenv("STP_STATE_DIR", str(tmp_path / "other"))
        with pytest.raises(LocalStackError, match=r"e\.g\. STP_ENDPOINT_URL=http://127\.0\.0\.1:\d+"):
            up(load_settings())
    finally:
        down(s)
