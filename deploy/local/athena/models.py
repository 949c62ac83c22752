"""State of the local Athena endpoint: workgroups and query executions.

A query execution goes ``QUEUED`` → ``RUNNING`` → ``SUCCEEDED`` | ``FAILED`` | ``CANCELLED`` on a
small worker pool; :meth:`AthenaBackend.stop_query_execution` cancels it (a running DuckDB
statement is interrupted). Results are kept for paging and also written to the output location
as Athena does (``<OutputLocation><QueryExecutionId>.csv``, ``.txt`` for DDL). Errors are
:class:`AthenaApiError` with Athena's codes and messages; the wire format is in ``responses``.

The records live beside it: :mod:`.workgroups` (a workgroup, its validation and updates),
:mod:`.executions` (a query execution and its state transitions), :mod:`.exceptions`.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deploy.local.athena.engine import Engine, QueryCancelled, QueryResult, classify
from deploy.local.athena.exceptions import AthenaApiError, invalid, validation
from deploy.local.athena.executions import TERMINAL, QueryExecution
from deploy.local.athena.formats import Column, parse_csv, to_csv, to_text
from deploy.local.athena.results import Cancellation
from deploy.local.athena.sql import QueryFailed
from deploy.local.athena.workgroups import (
    PRIMARY,
    WorkGroup,
    check_configuration,
    check_name,
    updated_configuration,
)

__all__ = [
    "MAX_QUERY_RESULTS",
    "AthenaApiError",
    "AthenaBackend",
    "QueryExecution",
    "WorkGroup",
]

log = logging.getLogger(__name__)

MAX_QUERY_RESULTS = 1000  # GetQueryResults MaxResults upper bound
MAX_LIST_EXECUTIONS = 50  # ListQueryExecutions MaxResults upper bound
MAX_BATCH_GET = 50  # BatchGetQueryExecution ids per call
MAX_WORKGROUPS_PAGE = 50
MAX_QUERY_LENGTH = 262_144
RESULTS_KEPT_IN_MEMORY = 64  # older results are paged from their S3 result file
WORKERS = 2
NO_OUTPUT_LOCATION = (
    "No output location provided. An output location is required either through the Workgroup result "
    "configuration setting or as an API input."
)


class AthenaBackend:
    """Workgroups and query executions of one local Athena endpoint (one region, one account)."""

    def __init__(self, engine: Engine, *, workers: int = WORKERS) -> None:
        self.engine = engine
        self._lock = threading.RLock()
        self.workgroups: dict[str, WorkGroup] = {PRIMARY: WorkGroup(PRIMARY, "")}
        self.executions: OrderedDict[str, QueryExecution] = OrderedDict()
        self._tokens: dict[str, str] = {}
        self._with_rows: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="athena-query")

    def saved(self) -> dict[str, Any]:
        """Workgroups and query history, for the stack's persistence (results stay in S3).

        A query still running is kept as FAILED: its statement does not survive the stack.
        """
        with self._lock:
            executions = []
            for execution in self.executions.values():
                kept = dataclasses.replace(execution, cancellation=Cancellation(), rows=None)
                if kept.state not in TERMINAL:
                    kept.state, kept.completed = "FAILED", time.time()
                    kept.state_change_reason = "the local stack stopped while the query ran; run it again"
                executions.append(kept)
            return {
                "workgroups": dict(self.workgroups),
                "executions": executions,
                "tokens": dict(self._tokens),
            }

    def restore(self, saved: dict[str, Any]) -> None:
        with self._lock:
            self.workgroups = dict(saved["workgroups"])
            self.executions = OrderedDict((e.id, e) for e in saved["executions"])
            self._tokens = dict(saved["tokens"])

    def state_counts(self) -> dict[str, int]:
        """How many query executions are in each state (for the stack's health report)."""
        counts: dict[str, int] = {}
        with self._lock:
            for execution in self.executions.values():
                counts[execution.state] = counts.get(execution.state, 0) + 1
        return counts

    def shutdown(self) -> None:
        with self._lock:
            running = [q for q in self.executions.values() if q.state not in TERMINAL]
        for execution in running:
            execution.cancellation.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- workgroups --------------------------------------------------------------------
    def create_work_group(
        self,
        name: str,
        configuration: dict[str, Any] | None,
        description: str | None,
        tags: list[dict[str, str]] | None,
    ) -> None:
        check_name(name)
        configuration = dict(configuration or {})
        check_configuration(configuration)
        with self._lock:
            if name in self.workgroups:
                raise invalid("WorkGroup is already created")
            self.workgroups[name] = WorkGroup(
                name, description or "", "ENABLED", configuration, tags=tags or []
            )

    def get_work_group(self, name: str) -> WorkGroup:
        with self._lock:
            if name not in self.workgroups:
                raise invalid(f"WorkGroup {name} is not found.")
            return self.workgroups[name]

    def list_work_groups(
        self, max_results: int | None, next_token: str | None
    ) -> tuple[list[WorkGroup], str | None]:
        with self._lock:
            groups = sorted(self.workgroups.values(), key=lambda w: w.name)
        return _page(groups, max_results or MAX_WORKGROUPS_PAGE, next_token, "workgroups")

    def update_work_group(
        self, name: str, description: str | None, updates: dict[str, Any] | None, state: str | None
    ) -> None:
        with self._lock:
            group = self.get_work_group(name)
            group.configuration = updated_configuration(group.configuration, updates or {})
            if description is not None:
                group.description = description
            if state is not None:
                if state not in ("ENABLED", "DISABLED"):
                    raise validation(
                        "state", state, "Member must satisfy enum value set: [ENABLED, DISABLED]"
                    )
                group.state = state

    def delete_work_group(self, name: str, recursive: bool) -> None:
        with self._lock:
            if name == PRIMARY:
                raise invalid("Cannot delete primary workgroup")
            self.get_work_group(name)
            del self.workgroups[name]
            if recursive:
                for qid in [q.id for q in self.executions.values() if q.workgroup == name]:
                    self.executions[qid].cancellation.cancel()

    # --- query executions --------------------------------------------------------------
    def start_query_execution(
        self,
        query: str,
        *,
        workgroup: str | None,
        context: dict[str, Any] | None,
        result_configuration: dict[str, Any] | None,
        client_request_token: str | None,
    ) -> str:
        if not isinstance(query, str) or not query.strip():
            raise validation("queryString", query, "Member must have length greater than or equal to 1")
        if len(query) > MAX_QUERY_LENGTH:
            raise validation(
                "queryString", "...", f"Member must have length less than or equal to {MAX_QUERY_LENGTH}"
            )
        name = workgroup or PRIMARY
        with self._lock:
            if client_request_token and client_request_token in self._tokens:
                return self._tokens[client_request_token]
            group = self.workgroups.get(name)
            if group is None:
                raise invalid("WorkGroup is not found.")
            if group.state != "ENABLED":
                raise invalid(f"WorkGroup {name} is disabled.")
            result = dict(result_configuration or {})
            if group.enforced or not result.get("OutputLocation"):
                merged = dict(group.configuration.get("ResultConfiguration", {}))
                if not group.enforced:
                    merged.update({k: v for k, v in result.items() if v})
                result = merged
            location = result.get("OutputLocation")
            if not location:
                raise invalid(NO_OUTPUT_LOCATION)
            if not str(location).startswith("s3://"):
                raise invalid(f"outputLocation {location} is not a valid S3 location.")
            result["OutputLocation"] = location if location.endswith("/") else location + "/"
            context = context or {}
            statement_type, substatement_type = classify(query)
            execution = QueryExecution(
                id=str(uuid.uuid4()),
                query=query,
                workgroup=name,
                database=context.get("Database"),
                catalog=context.get("Catalog"),
                result_configuration=result,
                bytes_cutoff=group.bytes_cutoff,
                statement_type=statement_type,
                substatement_type=substatement_type,
                text_output=statement_type != "DML",
            )
            self.executions[execution.id] = execution
            if client_request_token:
                self._tokens[client_request_token] = execution.id
        self._pool.submit(self._run, execution)
        return execution.id

    def get_query_execution(self, query_id: str) -> QueryExecution:
        with self._lock:
            execution = self.executions.get(query_id)
        if execution is None:
            raise invalid(f"QueryExecution {query_id} was not found")
        return execution

    def batch_get_query_execution(self, ids: list[str]) -> tuple[list[QueryExecution], list[dict[str, str]]]:
        if not 1 <= len(ids) <= MAX_BATCH_GET:
            raise validation(
                "queryExecutionIds", ids, f"Member must have length between 1 and {MAX_BATCH_GET}"
            )
        found, missing = [], []
        for qid in ids:
            with self._lock:
                execution = self.executions.get(qid)
            if execution is None:
                missing.append(
                    {
                        "QueryExecutionId": qid,
                        "ErrorCode": "INVALID_INPUT",
                        "ErrorMessage": f"QueryExecution {qid} was not found",
                    }
                )
            else:
                found.append(execution)
        return found, missing

    def list_query_executions(
        self, workgroup: str | None, max_results: int | None, next_token: str | None
    ) -> tuple[list[str], str | None]:
        name = workgroup or PRIMARY
        limit = max_results or MAX_LIST_EXECUTIONS
        if not 0 <= limit <= MAX_LIST_EXECUTIONS:
            raise validation(
                "maxResults", limit, f"Member must have value less than or equal to {MAX_LIST_EXECUTIONS}"
            )
        with self._lock:
            self.get_work_group(name)
            ids = [q.id for q in reversed(self.executions.values()) if q.workgroup == name]
        return _page(ids, limit, next_token, name)

    def stop_query_execution(self, query_id: str) -> None:
        execution = self.get_query_execution(query_id)
        with execution.lock:
            if execution.state in TERMINAL:
                return
            if execution.state == "QUEUED":
                execution.finish("CANCELLED", "Query was cancelled by user")
                return
        execution.cancellation.cancel()

    def get_query_results(
        self, query_id: str, max_results: int | None, next_token: str | None
    ) -> tuple[list[Column], list[tuple[str | None, ...]], str | None]:
        """One page of rows; the first page of a query starts with the column names, like Athena's."""
        limit = MAX_QUERY_RESULTS if max_results is None else max_results
        if not 1 <= limit <= MAX_QUERY_RESULTS:
            raise validation(
                "maxResults", limit, f"Member must have value less than or equal to {MAX_QUERY_RESULTS}"
            )
        execution = self.get_query_execution(query_id)
        if execution.state in ("QUEUED", "RUNNING"):
            raise invalid(f"Query has not yet finished. Current state: {execution.state}")
        if execution.state != "SUCCEEDED":
            raise invalid(f"Query did not finish successfully. Final query state: {execution.state}")
        rows = self._rows(execution)
        head = [] if execution.text_output else [tuple(c.name for c in execution.columns)]
        page, token = _page(rows, limit, next_token, query_id, head=head)  # O(page): rows are not copied
        return execution.columns, page, token

    # --- execution ---------------------------------------------------------------------
    def _run(self, execution: QueryExecution) -> None:
        with execution.lock:
            if execution.state != "QUEUED":
                return
            execution.state = "RUNNING"
            execution.started = time.time()
        try:
            result = self.engine.run(
                execution.query,
                database=execution.database,
                catalog=execution.catalog,
                cancellation=execution.cancellation,
                bytes_cutoff=execution.bytes_cutoff,
            )
            self._write_results(execution, result)
        except QueryFailed as err:
            execution.athena_error = {
                "ErrorCategory": err.category,
                "ErrorType": err.error_type,
                "Retryable": err.retryable,
                "ErrorMessage": err.reason,
            }
            execution.finish("FAILED", err.reason)
        except QueryCancelled as err:
            execution.statistics["DataScannedInBytes"] = err.data_scanned
            execution.finish("CANCELLED", err.reason)
        except FileNotFoundError as err:
            execution.fail_system(f"HIVE_FILESYSTEM_ERROR: {err}", 401)
        except Exception as err:  # the endpoint must answer, whatever the engine did
            log.exception("query %s failed unexpectedly", execution.id)
            execution.fail_system(f"GENERIC_INTERNAL_ERROR: {type(err).__name__}: {err}", 200)
        else:
            execution.statement_type = result.statement_type
            execution.substatement_type = result.substatement_type
            execution.columns = result.columns
            execution.rows = result.rows
            execution.statistics["DataScannedInBytes"] = result.data_scanned
            execution.statistics["QueryPlanningTimeInMillis"] = result.planning_millis
            self._remember(execution)
            execution.finish("SUCCEEDED", None, engine_millis=result.engine_millis)

    def _write_results(self, execution: QueryExecution, result: QueryResult) -> None:
        data = to_text(result.rows) if execution.text_output else to_csv(result.columns, result.rows)
        try:
            self.engine.warehouse.put(execution.result_file, data)
        except FileNotFoundError as err:
            raise QueryFailed("HIVE_FILESYSTEM_ERROR", str(err), error_type=401, category=1) from err

    def _remember(self, execution: QueryExecution) -> None:
        """Keep the newest results in memory; older ones are paged from their result file."""
        with self._lock:
            self._with_rows.append(execution.id)
            while len(self._with_rows) > RESULTS_KEPT_IN_MEMORY:
                old = self.executions.get(self._with_rows.pop(0))
                if old is not None:
                    old.rows = None

    def _rows(self, execution: QueryExecution) -> list[tuple[str | None, ...]]:
        rows = execution.rows
        if rows is not None:
            return rows
        data = self.engine.warehouse.get(execution.result_file)
        if execution.text_output:
            return [tuple(line.split("\t")) for line in data.decode("utf-8").splitlines()]
        return parse_csv(data)[1]


def _page(
    items: list[Any], limit: int, token: str | None, scope: str, *, head: list[Any] | None = None
) -> tuple[list[Any], str | None]:
    """Offset paging with an opaque token bound to what is paged; ``head`` rows come first."""
    offset = 0
    if token:
        try:
            token_scope, _, raw = base64.urlsafe_b64decode(token.encode()).decode().rpartition(":")
            offset = int(raw)
        except (ValueError, UnicodeDecodeError):
            raise invalid("Invalid NextToken provided") from None
        if token_scope != scope or offset < 0:
            raise invalid("Invalid NextToken provided")
    first = head or []
    end = offset + limit
    total = len(first) + len(items)
    next_token = base64.urlsafe_b64encode(f"{scope}:{end}".encode()).decode() if end < total else None
    skip = len(first)
    return [*first[offset:end], *items[max(0, offset - skip) : max(0, end - skip)]], next_token
