"""What a statement run gives back: its result, its cancellation and the cancelled outcome."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from deploy.local.athena.formats import Column

__all__ = ["Cancellation", "QueryCancelled", "QueryResult"]


class QueryCancelled(Exception):
    """The statement was stopped; ``data_scanned`` is what it had scanned (Athena bills that)."""

    def __init__(self, reason: str, data_scanned: int = 0):
        self.reason = reason
        self.data_scanned = data_scanned
        super().__init__(reason)


class Cancellation:
    """A stop request that reaches a running DuckDB statement (``interrupt()``)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._connection: Any = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def cancel(self) -> None:
        with self._lock:
            self._event.set()
            if self._connection is not None:
                self._connection.interrupt()

    def attach(self, connection: Any) -> None:
        with self._lock:
            self._connection = connection
            if connection is not None and self._event.is_set():
                connection.interrupt()

    def check(self, scanned: int = 0) -> None:
        if self._event.is_set():
            raise QueryCancelled("Query was cancelled by user", scanned)


@dataclass
class QueryResult:
    columns: list[Column]
    rows: list[tuple[str | None, ...]]
    data_scanned: int = 0
    statement_type: str = "DML"
    substatement_type: str = "SELECT"
    engine_millis: int = 0
    planning_millis: int = 0
    tables: list[str] = field(default_factory=list)

    @property
    def is_text(self) -> bool:
        """DDL/utility results are written as ``.txt`` without a header, like Athena's."""
        return self.statement_type != "DML"
