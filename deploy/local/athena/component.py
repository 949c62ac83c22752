"""The Athena endpoint as a component of the local stack: claims ``AmazonAthena.*`` requests.

It runs in the stack process beside moto and serves on the stack's one URL. Tables come from the
stack's Glue API and objects from its S3 API, reached over the same endpoint (see ``tables``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from deploy.local.athena.cache import ScanCache
from deploy.local.athena.engine import Engine
from deploy.local.athena.models import WORKERS, AthenaBackend
from deploy.local.athena.responses import TARGET_PREFIX, AthenaResponses
from deploy.local.athena.tables import InProcessObjects, Warehouse

__all__ = ["AthenaComponent"]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 2 * 1024 * 1024


class AthenaComponent:
    """WSGI app + lifecycle for the local Athena endpoint (see ``deploy.local.server.Component``)."""

    name = "athena"

    def __init__(self, stack: Any, *, workers: int = WORKERS) -> None:
        self.stack = stack
        self.workers = workers
        self.backend: AthenaBackend | None = None
        self.responses: AthenaResponses | None = None
        self._warehouse: Warehouse | None = None
        self.cache: ScanCache | None = None
        self.requests = 0
        self._saved: dict[str, Any] | None = None

    def persisted(self) -> tuple[str, Callable[[], Any], Callable[[Any], None]]:
        """The part of the stack's persistence this endpoint owns: workgroups and query history."""

        def dump() -> Any:
            return self.backend.saved() if self.backend is not None else self._saved

        def load(saved: Any) -> None:
            self._saved = saved

        return "athena", dump, load

    def start(self) -> None:
        scratch = Path(self.stack.state_dir) / "athena" / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        # In the stack's process: objects straight from moto's S3 backend, parsed once (scan cache).
        self._warehouse = Warehouse(self.stack.endpoint, self.stack.region, objects=InProcessObjects())
        self.cache = ScanCache(Path(self.stack.state_dir) / "athena" / "cache")
        self.backend = AthenaBackend(Engine(self._warehouse, scratch, cache=self.cache), workers=self.workers)
        if self._saved is not None:
            self.backend.restore(self._saved)
        self.responses = AthenaResponses(self.backend)
        from deploy.local import access

        access.gate().lookups["athena_workgroup_of_query"] = self._workgroup_of  # IAM: a query's workgroup
        threading.Thread(target=self._warm, name="athena-warm", daemon=True).start()
        log.info("Athena endpoint ready (DuckDB engine, %d workers)", self.workers)

    def _workgroup_of(self, query_id: str) -> str | None:
        backend = self.backend
        execution = backend.executions.get(query_id) if backend is not None else None
        return execution.workgroup if execution is not None else None

    def _warm(self) -> None:
        """Pay the engine's one-time costs (DuckDB, sqlglot, the Glue client) before the first query."""
        try:
            import duckdb

            from deploy.local.athena.sql import parse, transpile

            duckdb.connect(":memory:").execute(transpile(parse("SELECT 1 AS x"))).fetchall()
            assert self._warehouse is not None
            _ = self._warehouse.glue
        except Exception:  # warming is an optimisation: the first query pays instead
            log.debug("warming the Athena engine failed", exc_info=True)

    def stop(self) -> None:
        if self.backend is not None:
            self.backend.shutdown()
        if self._warehouse is not None:
            self._warehouse.close()

    def health(self) -> dict[str, Any]:
        if self.backend is None:
            return {"status": "stopped"}
        states = self.backend.state_counts()
        return {
            "status": "ok",
            "requests": self.requests,
            "workgroups": len(self.backend.workgroups),
            "queries": states,
            "scan_cache": self.cache.stats() if self.cache else {},
        }

    def handles(self, environ: dict[str, Any]) -> bool:
        return str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith(TARGET_PREFIX)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.requests += 1
        if self.responses is None:
            return _reply(
                start_response, 503, b'{"__type": "ServiceUnavailableException", "Message": "starting"}', {}
            )
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(min(length, MAX_REQUEST_BYTES)) if length > 0 else b""
        status, payload, headers = self.responses.dispatch(str(environ["HTTP_X_AMZ_TARGET"]), body)
        return _reply(start_response, status, payload, headers)


def _reply(
    start_response: Callable[..., Any], status: int, body: bytes, headers: dict[str, str]
) -> list[bytes]:
    phrase = HTTPStatus(status).phrase
    header_list = [*headers.items(), ("Content-Length", str(len(body)))]
    if not any(k.lower() == "content-type" for k, _ in header_list):
        header_list.append(("Content-Type", "application/x-amz-json-1.1"))
    start_response(f"{status} {phrase}", header_list)
    return [body]
