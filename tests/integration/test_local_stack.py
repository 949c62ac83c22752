"""The local stack process: loopback only, idempotent up, clean down with no orphans."""

from __future__ import annotations

import os
import socket

import pytest

from deploy.local import down, status, up
from helpers.pipeline.config import load_settings

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_is_idempotent_and_down_leaves_no_process(tmp_path, free_port) -> None:
    s = load_settings(environ={}, local_port=free_port(), state_dir=str(tmp_path))
    assert not status(s).running
    first = up(s)
    try:
        again = up(s)
        assert first.pid == again.pid
        health = status(s).health
        assert health is not None and health["status"] == "ok"
        assert health["endpoint"] == f"http://127.0.0.1:{s.local_port}"
        assert (tmp_path / "stack.pid").read_text() == str(first.pid)
        assert (tmp_path / "logs" / "stack.log").is_file()
        # bound to loopback only: the port is not reachable on another local address
        with socket.create_connection(("127.0.0.1", s.local_port), timeout=2):
            pass
    finally:
        assert down(s)
    assert first.pid is not None and not _alive(first.pid)
    assert not status(s).running
    assert not down(s)  # a second down is harmless


def test_up_refuses_a_port_taken_by_another_program(tmp_path) -> None:
    from helpers.core.errors import LocalStackError

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        s = load_settings(environ={}, local_port=other.getsockname()[1], state_dir=str(tmp_path))
        with pytest.raises(LocalStackError, match="taken by another program"):
            up(s)


def test_server_refuses_non_loopback_binding() -> None:
    from deploy.local.server import LocalStack

    with pytest.raises(ValueError, match="loopback only"):
        LocalStack(0, host="0.0.0.0")
