"""Run one Athena (Trino) SQL statement with DuckDB over the S3 objects of Glue tables.

Steps for a query:

1. parse the Trino SQL with sqlglot (syntax errors fail here, with line and column);
2. resolve every table reference against the Glue catalog (``catalog.database.table``, the
   database defaulting to the execution context's) and prune registered partitions with the
   query's ``partition_key = 'literal'`` / ``IN (...)`` predicates, as Athena does;
3. list and fetch the partitions' objects (hidden ``_``/``.`` files skipped), enforcing the
   workgroup's bytes-scanned cutoff before reading; load them into DuckDB tables named
   ``awsdatacatalog.<database>.<table>`` with the Glue column types and the partition values
   as columns;
4. transpile to DuckDB SQL (``integer_division`` on, so ``5 / 2`` is 2 as in Trino) and run;
5. report Athena column types and value texts (:mod:`.formats`).

Also answers ``SHOW DATABASES|SCHEMAS``, ``SHOW TABLES``, ``SHOW PARTITIONS`` and ``SHOW COLUMNS``
from Glue (:mod:`.show`). Other DDL is refused (create tables through the Glue API).
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.local.athena.cache import ScanCache
from deploy.local.athena.formats import athena_column, formatter_for, glue_to_duckdb
from deploy.local.athena.results import Cancellation, QueryCancelled, QueryResult
from deploy.local.athena.show import DDL, SHOW, classify, show
from deploy.local.athena.sql import (
    QueryFailed,
    engine_error,
    first_line,
    name_columns,
    parse,
    partition_filters,
    position,
    table_references,
    transpile,
)
from deploy.local.athena.tables import DEFAULT_CATALOG, Partition, S3Object, TableDef, Warehouse, s3_path

__all__ = ["Cancellation", "Engine", "QueryCancelled", "QueryResult", "classify"]

log = logging.getLogger(__name__)

ROWS_PER_FETCH = 10_000
DUCKDB_THREADS = 2
_COMPRESSION_SUFFIXES = (".gz", ".gzip", ".zst", ".zstd")


@dataclass
class _Scan:
    table: TableDef
    partitions: list[Partition] | None  # None: unpartitioned table
    objects: dict[str, list[S3Object]]  # partition location (or table location) → objects


class Engine:
    """Executes statements; one in-memory DuckDB database per statement."""

    def __init__(
        self, warehouse: Warehouse, scratch_dir: str | Path | None = None, *, cache: ScanCache | None = None
    ) -> None:
        self.warehouse = warehouse
        self.scratch_dir = Path(scratch_dir) if scratch_dir else None
        self.cache = cache

    def run(
        self,
        sql: str,
        *,
        database: str | None = None,
        catalog: str | None = None,
        cancellation: Cancellation | None = None,
        bytes_cutoff: int | None = None,
    ) -> QueryResult:
        cancel = cancellation or Cancellation()
        database = (database or "default").lower()
        catalog = (catalog or DEFAULT_CATALOG).lower()
        if catalog != DEFAULT_CATALOG:
            raise QueryFailed("CATALOG_NOT_FOUND", f"Catalog '{catalog}' does not exist")
        text = sql.strip().rstrip(";").strip()
        statement = SHOW.match(text)
        if statement:
            return show(self.warehouse, statement["what"].upper(), statement["rest"], database)
        if DDL.match(text):
            verb = text.split(None, 1)[0].upper()
            raise QueryFailed(
                "NOT_SUPPORTED",
                f"{verb} statements are not supported by the local Athena endpoint; create and change "
                "tables through the Glue API (helpers.pipeline.catalog.ensure_table, sync_partitions)",
            )
        return self._select(text, database, cancel, bytes_cutoff)

    # --- SELECT ------------------------------------------------------------------------
    def _select(self, sql: str, database: str, cancel: Cancellation, cutoff: int | None) -> QueryResult:
        import duckdb

        started = time.monotonic()
        tree = parse(sql)
        refs = table_references(tree)
        scans = self._plan(refs, database)
        planned = time.monotonic()
        total = sum(o.size for scan in scans.values() for objs in scan.objects.values() for o in objs)
        if cutoff is not None and total > cutoff:
            raise QueryCancelled("Bytes scanned limit was exceeded", cutoff)
        cancel.check()
        name_columns(tree)
        duck_sql = transpile(tree)
        con = duckdb.connect(":memory:", config={"threads": DUCKDB_THREADS, "integer_division": True})
        cancel.attach(con)
        try:
            with tempfile.TemporaryDirectory(prefix="athena-", dir=self.scratch_dir) as scratch:
                con.execute(f"ATTACH ':memory:' AS {DEFAULT_CATALOG}")
                for scan in scans.values():
                    cancel.check(total)
                    self._load(con, scan, Path(scratch))
                con.execute(f"CREATE SCHEMA IF NOT EXISTS {DEFAULT_CATALOG}.{_quote(database)}")
                con.execute(f"USE {DEFAULT_CATALOG}.{_quote(database)}")
                con.execute("SET enable_external_access = false")
                con.execute("SET lock_configuration = true")
                cancel.check(total)
                cursor = con.execute(duck_sql)
                columns = [athena_column(d[0], d[1]) for d in cursor.description or []]
                formatters = [formatter_for(c.type) for c in columns]
                rows: list[tuple[str | None, ...]] = []
                while chunk := cursor.fetchmany(ROWS_PER_FETCH):
                    cancel.check(total)
                    rows.extend(tuple(f(v) for f, v in zip(formatters, row, strict=True)) for row in chunk)
        except duckdb.InterruptException as err:
            raise QueryCancelled("Query was cancelled by user", total) from err
        except duckdb.Error as err:
            if cancel.requested:
                raise QueryCancelled("Query was cancelled by user", total) from err
            raise engine_error(err) from err
        finally:
            cancel.attach(None)
            con.close()
        finished = time.monotonic()
        return QueryResult(
            columns=columns,
            rows=rows,
            data_scanned=total,
            engine_millis=round((finished - started) * 1000),
            planning_millis=round((planned - started) * 1000),
            tables=[scan.table.qualified for scan in scans.values()],
        )

    def _plan(self, refs: list[Any], database: str) -> dict[str, _Scan]:
        """Resolve table references, prune partitions, list the objects to scan."""
        needed: dict[str, tuple[TableDef, list[dict[str, set[str]] | None]]] = {}
        for ref in refs:
            table = self._resolve(ref, database)
            entry = needed.setdefault(table.qualified, (table, []))
            entry[1].append(partition_filters(ref, [k for k, _ in table.partition_keys]))
        scans = {}
        for qualified, (table, filters) in needed.items():
            if table.format == "unsupported":
                raise QueryFailed(
                    "HIVE_UNSUPPORTED_FORMAT",
                    f"Table '{qualified}' uses SerDe {table.serde!r}; "
                    "the local endpoint reads JSON and Parquet tables",
                )
            scans[qualified] = self._scan(table, filters)
        return scans

    def _resolve(self, ref: Any, database: str) -> TableDef:
        catalog = (ref.catalog or DEFAULT_CATALOG).lower()
        db = (ref.db or database).lower()
        name = ref.name.lower()
        where = position(ref)
        if catalog != DEFAULT_CATALOG:
            raise QueryFailed("CATALOG_NOT_FOUND", f"{where}Catalog '{catalog}' does not exist")
        table = self.warehouse.table(db, name)
        if table is None:
            if not self.warehouse.database_exists(db):
                raise QueryFailed("SCHEMA_NOT_FOUND", f"{where}Schema '{db}' does not exist")
            raise QueryFailed("TABLE_NOT_FOUND", f"{where}Table '{catalog}.{db}.{name}' does not exist")
        return table

    def _scan(self, table: TableDef, filters: list[dict[str, set[str]] | None]) -> _Scan:
        if not table.partition_keys:
            return _Scan(table, None, {table.location: self.warehouse.objects([table.location])})
        keys = [k for k, _ in table.partition_keys]
        partitions = [p for p in self.warehouse.partitions(table) if _wanted(p, keys, filters)]
        base = table.location.rstrip("/") + "/"
        inside = [p for p in partitions if p.location.startswith(base)]
        listed: list[S3Object] = self.warehouse.objects([table.location]) if len(inside) > 1 else []
        objects: dict[str, list[S3Object]] = {}
        for p in partitions:
            prefix = s3_path(p.location).rstrip("/") + "/"
            if listed and p in inside:
                objects[p.location] = [o for o in listed if o.path.startswith(prefix)]
            else:
                objects[p.location] = self.warehouse.objects([p.location])
        return _Scan(table, partitions, objects)

    def _load(self, con: Any, scan: _Scan, scratch: Path) -> None:
        """Create ``awsdatacatalog.<db>.<table>`` from the scanned objects."""
        table = scan.table
        target = f"{DEFAULT_CATALOG}.{_quote(table.database)}.{_quote(table.name)}"
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {DEFAULT_CATALOG}.{_quote(table.database)}")
        try:
            data_types = [(n, glue_to_duckdb(t)) for n, t in table.columns]
            part_types = [(n, glue_to_duckdb(t)) for n, t in table.partition_keys]
        except ValueError as err:
            raise QueryFailed("NOT_SUPPORTED", f"Table '{table.qualified}': {err}") from err
        partition_of = {p.location: p.values for p in scan.partitions or []}
        wanted = [
            (obj, partition_of.get(location, ())) for location, objs in scan.objects.items() for obj in objs
        ]
        if not wanted:
            columns = ", ".join(f"{_quote(n)} {t}" for n, t in [*data_types, *part_types])
            con.execute(f"CREATE TABLE {target} ({columns})")
            return
        file_columns = ", ".join(['"_stp_file" VARCHAR', *(f"{_quote(n)} VARCHAR" for n, _ in part_types)])
        con.execute(f'CREATE TEMP TABLE "_stp_files" ({file_columns})')
        con.executemany(
            f'INSERT INTO "_stp_files" VALUES ({", ".join("?" * (1 + len(part_types)))})',
            [(obj.path, *values) for obj, values in wanted],
        )
        try:
            if table.format == "json":
                segments = self._json_segments(con, table, data_types, [obj for obj, _ in wanted], scratch)
                source = f"read_parquet([{', '.join(_literal(str(p)) for p in segments)}])"
                data_select = ", ".join(f"j.{_quote(n)}" for n, _ in data_types)
            else:
                source = self._parquet_source([obj for obj, _ in wanted], scratch)
                data_select = ", ".join(f"CAST(j.{_quote(n)} AS {t}) AS {_quote(n)}" for n, t in data_types)
            part_select = "".join(f", CAST(f.{_quote(n)} AS {t}) AS {_quote(n)}" for n, t in part_types)
            con.execute(
                f"CREATE TABLE {target} AS SELECT {data_select}{part_select} FROM {source} AS j "
                f'JOIN "_stp_files" AS f ON j."_stp_file" = f."_stp_file"'
            )
        except Exception as err:
            import duckdb

            if isinstance(err, duckdb.Error) and not isinstance(err, duckdb.InterruptException):
                raise QueryFailed(
                    "HIVE_BAD_DATA",
                    f"Error reading table '{table.qualified}': {first_line(err)}",
                    error_type=1001,
                ) from err
            raise
        finally:
            con.execute('DROP TABLE IF EXISTS "_stp_files"')

    def _copies(self, objects: list[S3Object], scratch: Path, fmt: str) -> dict[str, S3Object]:
        """Local copies of the objects' bytes: copy path -> object."""
        contents = self.warehouse.read(objects)
        copies = {}
        for number, obj in enumerate(objects):
            local = scratch / f"{uuid.uuid4().hex[:8]}-{number}{_suffix(obj.path, fmt)}"
            local.write_bytes(contents[obj.path])
            copies[str(local)] = obj
        return copies

    def _parquet_source(self, objects: list[S3Object], scratch: Path) -> str:
        copies = self._copies(objects, scratch, "parquet")
        con_map = ", ".join(f"({_literal(local)}, {_literal(obj.path)})" for local, obj in copies.items())
        paths = "[" + ", ".join(_literal(local) for local in copies) + "]"
        return (
            f"(SELECT r.*, m.uri AS \"_stp_file\" FROM read_parquet({paths}, filename='_stp_local', "
            f"union_by_name=true) AS r JOIN (VALUES {con_map}) AS m(local, uri) ON r._stp_local = m.local)"
        )

    def _json_segments(
        self,
        con: Any,
        table: TableDef,
        data_types: list[tuple[str, str]],
        objects: list[S3Object],
        scratch: Path,
    ) -> list[Path]:
        """Parquet segments holding every object's rows (``_stp_file`` = its path), parsing only new ones."""
        ignore = table.serde_parameters.get("ignore.malformed.json", "").lower() == "true"
        schema = ("json", tuple(data_types), ignore)
        cached, missing = self.cache.plan(schema, objects) if self.cache else ([], objects)
        if not missing:
            return cached
        copies = self._copies(missing, scratch, table.format)
        keep = self.cache is not None and all(o.etag for o in missing)
        segment = self.cache.new_path() if keep and self.cache else scratch / f"{uuid.uuid4().hex}.parquet"
        spec = "{" + ", ".join(f"{_literal(n)}: {_literal(t)}" for n, t in data_types) + "}"
        paths = "[" + ", ".join(_literal(local) for local in copies) + "]"
        pairs = ", ".join(f"({_literal(local)}, {_literal(obj.path)})" for local, obj in copies.items())
        columns = ", ".join(f"j.{_quote(n)}" for n, _ in data_types)
        try:
            con.execute(
                f'COPY (SELECT {columns}, m.uri AS "_stp_file" FROM read_json({paths}, columns={spec}, '
                f"format='newline_delimited', records=true, filename='_stp_local', "
                f"ignore_errors={str(ignore).lower()}) AS j JOIN (VALUES {pairs}) AS m(local, uri) "
                f"ON j._stp_local = m.local) TO {_literal(str(segment))} (FORMAT parquet)"
            )
        except Exception as err:
            import duckdb

            if isinstance(err, duckdb.Error) and not isinstance(err, duckdb.InterruptException):
                message = first_line(err)
                for local, obj in copies.items():
                    message = message.replace(local, f"s3://{obj.path}")
                raise QueryFailed(
                    "HIVE_BAD_DATA", f"Error reading table '{table.qualified}': {message}", error_type=1001
                ) from err
            raise
        finally:
            for local in copies:
                Path(local).unlink(missing_ok=True)
        if keep and self.cache:
            rows = int(
                con.execute(f"SELECT count(*) FROM read_parquet({_literal(str(segment))})").fetchone()[0]
            )
            self.cache.add(schema, segment, missing, rows)
        return [*cached, segment]


# --- small utilities ------------------------------------------------------------------


def _wanted(partition: Partition, keys: list[str], filters: list[dict[str, set[str]] | None]) -> bool:
    """Needed by at least one reference (a reference without filters needs every partition)."""
    for f in filters:
        if not f or all(partition.values[keys.index(k)] in allowed for k, allowed in f.items()):
            return True
    return False


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _suffix(path: str, fmt: str) -> str:
    lower = path.lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            return (".json" if fmt == "json" else ".parquet") + suffix
    return ".json" if fmt == "json" else ".parquet"
