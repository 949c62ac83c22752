"""A Lambda worker's descriptors are released exactly once, however often it is killed.

Regression: ``WorkerPool`` killed a dead worker twice (``Worker.invoke`` → ``kill()``, then
``_release`` → ``kill()``), closing its response pipe's descriptor a second time; by then the
number could belong to another worker's pipe, which was closed under it (``EBADF`` in the stack
log). These tests run a real worker process (no stack needed) from a one-file zip.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import pytest

from deploy.local._lambda.logs import LogSink
from deploy.local._lambda.models import FunctionSnapshot
from deploy.local._lambda.workers import Worker, build_runtime_packages

pytestmark = pytest.mark.integration

HANDLER = "def handler(event, context):\n    return {'echo': event}\n"


@pytest.fixture(scope="module")
def runtime_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_runtime_packages(tmp_path_factory.mktemp("runtime") / "packages")


def start_worker(tmp_path: Path, runtime_packages: Path) -> Worker:
    code_dir = tmp_path / "code"
    code_dir.mkdir(exist_ok=True)
    (code_dir / "fn.py").write_text(HANDLER)
    snap = FunctionSnapshot(
        name="descriptor-test",
        arn="arn:aws:lambda:us-east-1:123456789012:function:descriptor-test",
        region="us-east-1",
        account="123456789012",
        handler="fn.handler",
        runtime="python3.11",
        role="arn:aws:iam::123456789012:role/r",
        timeout=5.0,
        memory_mb=128,
        environment=(),
        code_digest=hashlib.sha256(HANDLER.encode()).hexdigest(),
        code=b"",
    )
    worker = Worker(snap, code_dir, "http://127.0.0.1:9", LogSink(), [], runtime_packages)
    assert worker.start() is None
    return worker


def test_a_second_kill_leaves_a_reused_descriptor_open(tmp_path: Path, runtime_packages: Path) -> None:
    # GIVEN a worker killed once (as Worker.invoke does when the process dies)
    worker = start_worker(tmp_path, runtime_packages)
    fd = worker._resp_fd
    worker.kill()
    # WHEN its descriptor number is reused by someone else and the pool kills it again
    reused = os.open(os.devnull, os.O_RDONLY)
    try:
        assert reused == fd, "the freed descriptor number was not reused; the test needs it to be"
        worker.kill()
        # THEN the other owner's descriptor is still open
        assert os.fstat(reused) is not None
    finally:
        os.close(reused)


def test_concurrent_kills_close_the_pipe_once(tmp_path: Path, runtime_packages: Path) -> None:
    worker = start_worker(tmp_path, runtime_packages)
    fd = worker._resp_fd
    threads = [threading.Thread(target=worker.kill) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not worker.alive
    with pytest.raises(OSError):
        os.fstat(fd)  # closed (and not reopened by anyone in between)
    assert worker.signal_kill() is False  # nothing left to kill


def test_a_worker_still_answers_after_a_kill_of_another(tmp_path: Path, runtime_packages: Path) -> None:
    first = start_worker(tmp_path, runtime_packages)
    first.kill()
    second = start_worker(tmp_path, runtime_packages)  # likely gets the same descriptor numbers
    first.kill()
    outcome = second.invoke({"n": 1}, "req-1", second.snap.arn)
    assert (outcome.status, outcome.payload) == ("ok", '{"echo": {"n": 1}}')
    second.kill()
