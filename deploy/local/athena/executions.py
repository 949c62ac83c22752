"""A query execution of the local Athena endpoint: the record and its state transitions.

``QUEUED`` → ``RUNNING`` → ``SUCCEEDED`` | ``FAILED`` | ``CANCELLED``; :meth:`QueryExecution.finish`
stamps the statistics and sets the state last, so a poller sees a complete record once the state
is terminal.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from deploy.local.athena.formats import Column
from deploy.local.athena.results import Cancellation
from deploy.local.athena.workgroups import ENGINE_VERSION

__all__ = ["TERMINAL", "QueryExecution"]

log = logging.getLogger(__name__)

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


@dataclass
class QueryExecution:
    id: str
    query: str
    workgroup: str
    database: str | None
    catalog: str | None
    result_configuration: dict[str, Any]
    bytes_cutoff: int | None
    state: str = "QUEUED"
    state_change_reason: str | None = None
    athena_error: dict[str, Any] | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    completed: float | None = None
    statistics: dict[str, Any] = field(default_factory=dict)
    statement_type: str = "DML"
    substatement_type: str = "SELECT"
    columns: list[Column] = field(default_factory=list)
    rows: list[tuple[str | None, ...]] | None = None
    text_output: bool = False
    cancellation: Cancellation = field(default_factory=Cancellation)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def output_location(self) -> str:
        return str(self.result_configuration["OutputLocation"])

    @property
    def result_file(self) -> str:
        return f"{self.output_location}{self.id}.{'txt' if self.text_output else 'csv'}"

    def to_dict(self) -> dict[str, Any]:
        status: dict[str, Any] = {"State": self.state, "SubmissionDateTime": self.submitted}
        if self.state_change_reason:
            status["StateChangeReason"] = self.state_change_reason
        if self.completed is not None:
            status["CompletionDateTime"] = self.completed
        if self.athena_error:
            status["AthenaError"] = self.athena_error
        result_configuration = {**self.result_configuration, "OutputLocation": self.result_file}
        context = {k: v for k, v in (("Database", self.database), ("Catalog", self.catalog)) if v}
        data = {
            "QueryExecutionId": self.id,
            "Query": self.query,
            "StatementType": self.statement_type,
            "ResultConfiguration": result_configuration,
            "ResultReuseConfiguration": {"ResultReuseByAgeConfiguration": {"Enabled": False}},
            "QueryExecutionContext": context,
            "Status": status,
            "Statistics": {"ResultReuseInformation": {"ReusedPreviousResult": False}, **self.statistics},
            "WorkGroup": self.workgroup,
            "EngineVersion": ENGINE_VERSION,
            "SubstatementType": self.substatement_type,
        }
        return data

    def fail_system(self, reason: str, error_type: int) -> None:
        """FAILED with a system error (category 1), as Athena reports its own failures."""
        self.athena_error = {
            "ErrorCategory": 1,
            "ErrorType": error_type,
            "Retryable": False,
            "ErrorMessage": reason,
        }
        self.finish("FAILED", reason)

    def finish(self, state: str, reason: str | None, engine_millis: int = 0) -> None:
        now = time.time()
        self.completed = now
        queued = (self.started or now) - self.submitted
        total = now - self.submitted
        self.statistics.update(
            {
                "EngineExecutionTimeInMillis": engine_millis or round((now - (self.started or now)) * 1000),
                "QueryQueueTimeInMillis": round(queued * 1000),
                "TotalExecutionTimeInMillis": round(total * 1000),
                "ServiceProcessingTimeInMillis": 0,
            }
        )
        self.statistics.setdefault("DataScannedInBytes", 0)
        self.state_change_reason = reason
        self.state = state  # last: pollers see a complete record once the state is terminal
        suffix = f": {reason}" if reason else ""
        log.info("query %s %s in %d ms%s", self.id, state, round(total * 1000), suffix)
