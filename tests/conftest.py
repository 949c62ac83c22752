"""Shared fixtures: settings for tests and one local stack per test session.

The stack runs as a separate process (exactly as ``python -m deploy.local up`` starts it),
on a free loopback port with its state in a temporary folder, so a developer's own stack on
the default port is never touched.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from helpers.pipeline.config import Settings, load_settings

# Property tests share two cores with a local stack: no wall-clock deadlines, and in CI a
# fixed derandomised sequence so a run is reproducible.
hypothesis_settings.register_profile(
    "project",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)
hypothesis_settings.load_profile("project")

# Tests never read a developer's STP_* environment or real AWS credentials.
for _key in list(os.environ):
    if _key.startswith("STP_") or _key.startswith("AWS_"):
        del os.environ[_key]
# Nor a developer's ~/.aws files or an instance role: a test that resolves target "aws" without
# an account id meets "no credentials" at once, without a call off the loopback.
os.environ.update(
    AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_EC2_METADATA_DISABLED="true"
)
os.environ.setdefault("MPLBACKEND", "Agg")
# Tests provision, tear down and provision again under the same names within seconds: the test
# stacks keep a deleted queue's name 3 s, not AWS's 60 s (tests/integration/test_aws_first_contact.py
# runs the AWS-length behaviour on a stack of its own).
os.environ["STP_LOCAL_QUEUE_DELETION_SECONDS"] = "3"
# The session's stack holds many pipelines under names of their own, which the runner policy
# (scoped to the default names) would refuse: test stacks enforce no IAM unless a test asks
# (tests/integration/test_iam_enforced.py, tests/notebooks/test_workbook.py).
os.environ["STP_LOCAL_IAM"] = "0"
# The session's stack holds every test's state: a snapshot every 5 s, not 2, costs it less CPU
# (a test that needs one now asks for it: POST /_stp/snapshot).
os.environ.setdefault("STP_LOCAL_SNAPSHOT_SECONDS", "5")


def wait_until(check: Callable[[], Any], what: str, timeout: float) -> Any:
    """The first truthy ``check()``, polled every 0.5 s; AssertionError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def free_loopback_port() -> int:
    """A port nothing listens on right now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    return free_loopback_port


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Local settings pointing at the session's stack (port and state folder of its own)."""
    state = tmp_path_factory.mktemp("local-state")
    return load_settings(local_port=free_loopback_port(), state_dir=str(state))


@pytest.fixture(scope="session")
def local_stack(stack_settings: Settings) -> Iterator[Settings]:
    """A running local stack for the whole session; stopped (process group and all) at the end, and
    owned by this process: a test session killed outright (SIGKILL, OOM) does not leave it behind."""
    from deploy.local import down, up

    up(stack_settings, owner_pid=os.getpid())
    try:
        yield stack_settings
    finally:
        down(stack_settings)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``tests/unit`` holds only tests that need no stack: a unit test asking for one is refused."""
    unit = Path(__file__).resolve().parent / "unit"
    offenders = [
        item.nodeid
        for item in items
        if unit in Path(str(item.path)).resolve().parents
        and {"local_stack", "stack_settings"} & set(getattr(item, "fixturenames", ()))
    ]
    if offenders:
        raise pytest.UsageError(
            f"{len(offenders)} test(s) in tests/unit need the local stack; move them to tests/integration: "
            + ", ".join(offenders[:5])
        )


@pytest.fixture(scope="session")
def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
