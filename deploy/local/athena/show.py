"""Statements answered from the Glue catalog without DuckDB: ``SHOW ...``; and the DDL refused.

``SHOW DATABASES|SCHEMAS``, ``SHOW TABLES [IN db] [LIKE 'p']``, ``SHOW PARTITIONS table`` and
``SHOW COLUMNS IN table`` give one string column, as Athena's. :func:`classify` tells a
statement's ``(StatementType, SubstatementType)`` before it runs.
"""

from __future__ import annotations

import re

from deploy.local.athena.formats import Column
from deploy.local.athena.results import QueryResult
from deploy.local.athena.sql import QueryFailed
from deploy.local.athena.tables import DEFAULT_CATALOG, Warehouse

__all__ = ["DDL", "SHOW", "classify", "show"]

DUCKDB_THREADS = 2
_COMPRESSION_SUFFIXES = (".gz", ".gzip", ".zst", ".zstd")
DDL = re.compile(
    r"^\s*(CREATE|DROP|ALTER|MSCK|INSERT|UNLOAD|DELETE|UPDATE|MERGE|VACUUM|OPTIMIZE|EXPLAIN|PREPARE"
    r"|EXECUTE|DEALLOCATE|DESCRIBE|DESC|USE|SET|RESET|GRANT|REVOKE|CALL)\b",
    re.IGNORECASE,
)
SHOW = re.compile(
    r"^\s*SHOW\s+(?P<what>DATABASES|SCHEMAS|TABLES|PARTITIONS|COLUMNS)\b(?P<rest>.*)$", re.I | re.S
)
_IDENT = r'(?:"(?:[^"]|"")+"|`[^`]+`|[A-Za-z_][\w$]*)'
_NAME = re.compile(
    rf"\s*(?:(?:IN|FROM)\s+)?(?P<name>{_IDENT}(?:\.{_IDENT}){{0,2}})?\s*(?:LIKE\s+'(?P<like>[^']*)')?\s*$",
    re.I,
)


def classify(sql: str) -> tuple[str, str]:
    """``(StatementType, SubstatementType)`` of a statement, known before it runs."""
    text = sql.strip()
    show = SHOW.match(text)
    if show:
        return "DDL", f"SHOW_{show['what'].upper()}"
    ddl = DDL.match(text)
    if ddl:
        return "DDL", ddl.group(1).upper()
    return "DML", "SELECT"


def show(warehouse: Warehouse, what: str, rest: str, database: str) -> QueryResult:
    """The answer to ``SHOW <what><rest>`` (``what`` upper case) in the context of ``database``."""
    match = _NAME.match(rest)
    if not match:
        raise QueryFailed("SYNTAX_ERROR", f"line 1:1: cannot parse SHOW {what}{rest}")
    name, like = match["name"], match["like"]
    parts = [_unquote(p) for p in _split_name(name)] if name else []
    if what in ("DATABASES", "SCHEMAS"):
        column, values = "database_name", warehouse.databases()
    elif what == "TABLES":
        db = parts[-1] if parts else database
        if not warehouse.database_exists(db):
            raise QueryFailed("SCHEMA_NOT_FOUND", f"Schema '{db}' does not exist")
        column, values = "tab_name", warehouse.tables(db)
    else:
        if not parts:
            raise QueryFailed("SYNTAX_ERROR", f"line 1:1: SHOW {what} needs a table name")
        db, table_name = (parts[-2] if len(parts) > 1 else database), parts[-1]
        table = warehouse.table(db, table_name)
        if table is None:
            raise QueryFailed(
                "TABLE_NOT_FOUND", f"Table '{DEFAULT_CATALOG}.{db}.{table_name}' does not exist"
            )
        if what == "COLUMNS":
            column, values = "field", [n for n, _ in (*table.columns, *table.partition_keys)]
        else:
            keys = [k for k, _ in table.partition_keys]
            column = "partition"
            values = ["/".join(f"{k}={v}" for k, v in zip(keys, p.values, strict=True))
                      for p in warehouse.partitions(table)]  # fmt: skip
    if like is not None:
        pattern = re.compile(
            "^" + re.escape(like).replace("%", ".*").replace("_", ".").replace("\\*", ".*") + "$", re.I
        )
        values = [v for v in values if pattern.match(v)]
    return QueryResult(
        columns=[Column(column, "string")],
        rows=[(v,) for v in values],
        statement_type="DDL",
        substatement_type=f"SHOW_{what}",
    )


def _unquote(part: str) -> str:
    if part[:1] in ('"', "`"):
        return part[1:-1].replace('""', '"').lower()
    return part.lower()


def _split_name(name: str) -> list[str]:
    return re.findall(_IDENT, name)
