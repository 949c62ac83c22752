"""Athena's JSON 1.1 wire format: ``X-Amz-Target: AmazonAthena.<Action>`` in, JSON out.

Each handler reads the request parameters, calls :class:`~.models.AthenaBackend` and shapes the
response exactly as Athena's API reference (and botocore's service model) describe it. Errors
are ``{"__type": ..., "Message": ..., "AthenaErrorCode": ...}`` with status 400 (500 for
``InternalServerException``), which botocore turns into the usual ``ClientError``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from deploy.local.athena.exceptions import AthenaApiError
from deploy.local.athena.models import AthenaBackend, QueryExecution
from deploy.local.athena.tables import DEFAULT_CATALOG

__all__ = ["TARGET_PREFIX", "AthenaResponses"]

log = logging.getLogger(__name__)

TARGET_PREFIX = "AmazonAthena."
CONTENT_TYPE = "application/x-amz-json-1.1"


class AthenaResponses:
    """Dispatch one JSON request to its action; returns ``(status, body, headers)``."""

    def __init__(self, backend: AthenaBackend) -> None:
        self.backend = backend
        self.actions: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "StartQueryExecution": self.start_query_execution,
            "GetQueryExecution": self.get_query_execution,
            "BatchGetQueryExecution": self.batch_get_query_execution,
            "ListQueryExecutions": self.list_query_executions,
            "StopQueryExecution": self.stop_query_execution,
            "GetQueryResults": self.get_query_results,
            "GetQueryRuntimeStatistics": self.get_query_runtime_statistics,
            "CreateWorkGroup": self.create_work_group,
            "GetWorkGroup": self.get_work_group,
            "ListWorkGroups": self.list_work_groups,
            "UpdateWorkGroup": self.update_work_group,
            "DeleteWorkGroup": self.delete_work_group,
            "ListDataCatalogs": self.list_data_catalogs,
            "ListDatabases": self.list_databases,
            "GetDatabase": self.get_database,
            "ListTableMetadata": self.list_table_metadata,
            "GetTableMetadata": self.get_table_metadata,
        }

    def dispatch(self, target: str, body: bytes) -> tuple[int, bytes, dict[str, str]]:
        request_id = str(uuid.uuid4())
        headers = {"Content-Type": CONTENT_TYPE, "x-amzn-RequestId": request_id}
        action = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else target
        handler = self.actions.get(action)
        try:
            if handler is None:
                raise AthenaApiError(
                    "UnknownOperationException", f"Operation {action} is not supported by the local endpoint"
                )
            try:
                params = json.loads(body or b"{}")
            except ValueError:
                raise AthenaApiError("SerializationException", "Request body is not valid JSON") from None
            if not isinstance(params, dict):
                raise AthenaApiError("SerializationException", "Request body must be a JSON object")
            result = handler(params)
            return 200, json.dumps(result).encode(), headers
        except AthenaApiError as err:
            return err.status, json.dumps(err.body()).encode(), headers
        except Exception as err:  # an unexpected bug must not look like a dropped connection
            log.exception("Athena %s failed", action)
            error = AthenaApiError("InternalServerException", f"{type(err).__name__}: {err}", status=500)
            return 500, json.dumps(error.body()).encode(), headers

    # --- query executions --------------------------------------------------------------
    def start_query_execution(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "QueryString")
        query_id = self.backend.start_query_execution(
            p["QueryString"],
            workgroup=p.get("WorkGroup"),
            context=p.get("QueryExecutionContext"),
            result_configuration=p.get("ResultConfiguration"),
            client_request_token=p.get("ClientRequestToken"),
        )
        return {"QueryExecutionId": query_id}

    def get_query_execution(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "QueryExecutionId")
        return {"QueryExecution": _execution(self.backend.get_query_execution(p["QueryExecutionId"]))}

    def batch_get_query_execution(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "QueryExecutionIds")
        found, missing = self.backend.batch_get_query_execution(list(p["QueryExecutionIds"]))
        return {"QueryExecutions": [_execution(q) for q in found], "UnprocessedQueryExecutionIds": missing}

    def list_query_executions(self, p: dict[str, Any]) -> dict[str, Any]:
        ids, token = self.backend.list_query_executions(
            p.get("WorkGroup"), p.get("MaxResults"), p.get("NextToken")
        )
        return _with_token({"QueryExecutionIds": ids}, token)

    def stop_query_execution(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "QueryExecutionId")
        self.backend.stop_query_execution(p["QueryExecutionId"])
        return {}

    def get_query_results(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "QueryExecutionId")
        columns, rows, token = self.backend.get_query_results(
            p["QueryExecutionId"], p.get("MaxResults"), p.get("NextToken")
        )
        result = {
            "UpdateCount": 0,
            "ResultSet": {
                "Rows": [{"Data": [{} if v is None else {"VarCharValue": v} for v in row]} for row in rows],
                "ResultSetMetadata": {"ColumnInfo": [c.info() for c in columns]},
            },
        }
        return _with_token(result, token)

    def get_query_runtime_statistics(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "QueryExecutionId")
        execution = self.backend.get_query_execution(p["QueryExecutionId"])
        stats = execution.statistics
        rows = len(execution.rows or [])
        return {
            "QueryRuntimeStatistics": {
                "Timeline": {
                    "QueryQueueTimeInMillis": stats.get("QueryQueueTimeInMillis", 0),
                    "QueryPlanningTimeInMillis": stats.get("QueryPlanningTimeInMillis", 0),
                    "EngineExecutionTimeInMillis": stats.get("EngineExecutionTimeInMillis", 0),
                    "ServiceProcessingTimeInMillis": stats.get("ServiceProcessingTimeInMillis", 0),
                    "TotalExecutionTimeInMillis": stats.get("TotalExecutionTimeInMillis", 0),
                },
                "Rows": {"InputBytes": stats.get("DataScannedInBytes", 0), "OutputRows": rows},
            }
        }

    # --- workgroups --------------------------------------------------------------------
    def create_work_group(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "Name")
        self.backend.create_work_group(p["Name"], p.get("Configuration"), p.get("Description"), p.get("Tags"))
        return {}

    def get_work_group(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "WorkGroup")
        return {"WorkGroup": self.backend.get_work_group(p["WorkGroup"]).to_dict()}

    def list_work_groups(self, p: dict[str, Any]) -> dict[str, Any]:
        groups, token = self.backend.list_work_groups(p.get("MaxResults"), p.get("NextToken"))
        return _with_token({"WorkGroups": [g.summary() for g in groups]}, token)

    def update_work_group(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "WorkGroup")
        self.backend.update_work_group(
            p["WorkGroup"], p.get("Description"), p.get("ConfigurationUpdates"), p.get("State")
        )
        return {}

    def delete_work_group(self, p: dict[str, Any]) -> dict[str, Any]:
        _required(p, "WorkGroup")
        self.backend.delete_work_group(p["WorkGroup"], bool(p.get("RecursiveDeleteOption")))
        return {}

    # --- data catalog (answered from Glue) ---------------------------------------------
    def list_data_catalogs(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"DataCatalogsSummary": [{"CatalogName": "AwsDataCatalog", "Type": "GLUE"}]}

    def list_databases(self, p: dict[str, Any]) -> dict[str, Any]:
        _catalog(p)
        names = self.backend.engine.warehouse.databases()
        return {"DatabaseList": [{"Name": n} for n in names]}

    def get_database(self, p: dict[str, Any]) -> dict[str, Any]:
        _catalog(p)
        _required(p, "DatabaseName")
        name = p["DatabaseName"].lower()
        if not self.backend.engine.warehouse.database_exists(name):
            raise AthenaApiError("MetadataException", f"Database {name} not found.")
        return {"Database": {"Name": name}}

    def list_table_metadata(self, p: dict[str, Any]) -> dict[str, Any]:
        _catalog(p)
        _required(p, "DatabaseName")
        database = p["DatabaseName"].lower()
        warehouse = self.backend.engine.warehouse
        if not warehouse.database_exists(database):
            raise AthenaApiError("MetadataException", f"Database {database} not found.")
        tables = [warehouse.table(database, name) for name in warehouse.tables(database)]
        return {"TableMetadataList": [_table_metadata(t) for t in tables if t is not None]}

    def get_table_metadata(self, p: dict[str, Any]) -> dict[str, Any]:
        _catalog(p)
        _required(p, "DatabaseName")
        _required(p, "TableName")
        database, name = p["DatabaseName"].lower(), p["TableName"].lower()
        table = self.backend.engine.warehouse.table(database, name)
        if table is None:
            raise AthenaApiError("MetadataException", f"Table {name} not found in database {database}.")
        return {"TableMetadata": _table_metadata(table)}


def _execution(execution: QueryExecution) -> dict[str, Any]:
    return execution.to_dict()


def _table_metadata(table: Any) -> dict[str, Any]:
    return {
        "Name": table.name,
        "TableType": "EXTERNAL_TABLE",
        "Columns": [{"Name": n, "Type": t} for n, t in table.columns],
        "PartitionKeys": [{"Name": n, "Type": t} for n, t in table.partition_keys],
        "Parameters": {
            **table.parameters,
            "location": table.location,
            "serde.serialization.lib": table.serde,
        },
    }


def _required(params: dict[str, Any], name: str) -> None:
    if params.get(name) in (None, ""):
        raise AthenaApiError(
            "InvalidRequestException",
            f"1 validation error detected: Value null at '{name[0].lower() + name[1:]}' failed to satisfy "
            "constraint: Member must not be null",
            athena_code="INVALID_INPUT",
        )


def _catalog(params: dict[str, Any]) -> None:
    name = str(params.get("CatalogName") or DEFAULT_CATALOG)
    if name.lower() != DEFAULT_CATALOG:
        raise AthenaApiError("MetadataException", f"Catalog {name} not found.")


def _with_token(result: dict[str, Any], token: str | None) -> dict[str, Any]:
    if token:
        result["NextToken"] = token
    return result
