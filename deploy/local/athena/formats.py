"""Athena's type names and value formats, and its result files (CSV for queries, text for DDL).

Pure functions: DuckDB types in, what Athena (Trino) would report out — ``varchar``, ``bigint``,
``timestamp``... with ``ColumnInfo`` precision/scale, values as Athena renders them
(``2026-11-24 10:00:00.000``, ``1.0E7``, ``true``, NULL as no value), and the result CSV with
every value quoted and NULL as an empty unquoted field.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

__all__ = [
    "Column",
    "athena_column",
    "format_double",
    "format_value",
    "formatter_for",
    "glue_to_duckdb",
    "parse_csv",
    "to_csv",
    "to_text",
]

# ColumnInfo precision Athena reports per type (scale is 0 except for decimals).
_PRECISION = {
    "varchar": 2147483647, "char": 2147483647, "varbinary": 2147483647, "json": 2147483647,
    "bigint": 19, "integer": 10, "smallint": 5, "tinyint": 3, "double": 17, "float": 17,
    "boolean": 0, "date": 0, "timestamp": 3, "timestamp with time zone": 3, "time": 3,
    "array": 0, "map": 0, "row": 0, "uuid": 0, "interval day to second": 0,
}  # fmt: skip
_DUCKDB_TO_ATHENA = {
    "VARCHAR": "varchar", "BIGINT": "bigint", "HUGEINT": "bigint", "UBIGINT": "bigint",
    "UHUGEINT": "bigint", "INTEGER": "integer", "UINTEGER": "bigint", "SMALLINT": "smallint",
    "USMALLINT": "integer", "TINYINT": "tinyint", "UTINYINT": "smallint", "DOUBLE": "double",
    "FLOAT": "float", "BOOLEAN": "boolean", "DATE": "date", "TIMESTAMP": "timestamp",
    "TIMESTAMP_MS": "timestamp", "TIMESTAMP_NS": "timestamp", "TIMESTAMP_S": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamp with time zone", "TIME": "time", "BLOB": "varbinary",
    "UUID": "uuid", "JSON": "json", "INTERVAL": "interval day to second", "BIT": "varchar",
    "SQLNULL": "varchar", '"NULL"': "varchar", "NULL": "varchar",
}  # fmt: skip
_GLUE_SCALARS = {
    "string": "VARCHAR", "varchar": "VARCHAR", "char": "VARCHAR", "bigint": "BIGINT",
    "int": "INTEGER", "integer": "INTEGER", "smallint": "SMALLINT", "tinyint": "TINYINT",
    "double": "DOUBLE", "float": "FLOAT", "real": "FLOAT", "boolean": "BOOLEAN", "date": "DATE",
    "timestamp": "TIMESTAMP", "binary": "BLOB",
}  # fmt: skip


@dataclass(frozen=True)
class Column:
    """One result column as ``ColumnInfo`` describes it."""

    name: str
    type: str
    precision: int = 0
    scale: int = 0

    def info(self) -> dict[str, Any]:
        return {
            "CatalogName": "hive",
            "SchemaName": "",
            "TableName": "",
            "Name": self.name,
            "Label": self.name,
            "Type": self.type,
            "Precision": self.precision,
            "Scale": self.scale,
            "Nullable": "UNKNOWN",
            "CaseSensitive": self.type in ("varchar", "char", "json"),
        }


def athena_column(name: str, duckdb_type: object) -> Column:
    """Map a DuckDB result type (``DuckDBPyType`` or its text) to Athena's column description."""
    text = str(duckdb_type).strip()
    upper = text.upper()
    decimal = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", upper)
    if decimal:
        return Column(name, "decimal", int(decimal[1]), int(decimal[2]))
    if upper.endswith("]"):
        return Column(name, "array")
    if upper.startswith("STRUCT") or upper.startswith("UNION"):
        return Column(name, "row")
    if upper.startswith("MAP"):
        return Column(name, "map")
    if upper.startswith("VARCHAR"):
        upper = "VARCHAR"
    if upper.startswith("ENUM"):
        upper = "VARCHAR"
    athena = _DUCKDB_TO_ATHENA.get(upper, "varchar")
    return Column(name, athena, _PRECISION.get(athena, 0))


def glue_to_duckdb(glue_type: str) -> str:
    """DuckDB type for a Hive/Glue column type: ``string``→VARCHAR, ``array<bigint>``→BIGINT[]..."""
    text = glue_type.strip()
    lower = text.lower()
    decimal = re.fullmatch(r"decimal\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)", lower)
    if decimal:
        return f"DECIMAL({decimal[1]},{decimal[2]})"
    if lower == "decimal":
        return "DECIMAL(10,0)"
    if re.fullmatch(r"(var)?char\s*\(\s*\d+\s*\)", lower):
        return "VARCHAR"
    if lower.startswith("array<") and lower.endswith(">"):
        return f"{glue_to_duckdb(text[6:-1])}[]"
    if lower.startswith("map<") and lower.endswith(">"):
        key, value = _split_top(text[4:-1])
        return f"MAP({glue_to_duckdb(key)}, {glue_to_duckdb(value)})"
    if lower.startswith("struct<") and lower.endswith(">"):
        fields = []
        for part in _split_top(text[7:-1]):
            fname, _, ftype = part.partition(":")
            fields.append(f'"{fname.strip()}" {glue_to_duckdb(ftype)}')
        return f"STRUCT({', '.join(fields)})"
    if lower in _GLUE_SCALARS:
        return _GLUE_SCALARS[lower]
    raise ValueError(f"unsupported column type {glue_type!r}")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not nested inside ``<...>`` or ``(...)``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "<(":
            depth += 1
        elif ch in ">)":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def format_double(value: float) -> str:
    """A double as Athena prints it (Java ``Double.toString``): ``1.5``, ``100.0``, ``1.0E7``, ``1.0E-4``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    if 1e-3 <= abs(value) < 1e7:
        return repr(value)  # Python's shortest round-trip form is plain, with a '.', in this range
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    text = "".join(map(str, digits))
    scientific = len(digits) - 1 + int(exponent)
    return f"{'-' if sign else ''}{text[0]}.{text[1:] or '0'}E{scientific}"


def _plain_text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


def _integer_text(value: Any) -> str | None:
    return None if value is None else str(int(value))


def _double_text(value: Any) -> str | None:
    return None if value is None else format_double(float(value))


def formatter_for(athena_type: str) -> Callable[[Any], str | None]:
    """The value formatter of one column type (fast paths for the common scalar types)."""
    if athena_type in ("varchar", "char"):
        return _plain_text
    if athena_type in ("bigint", "integer", "smallint", "tinyint"):
        return _integer_text
    if athena_type in ("double", "float"):
        return _double_text
    return partial(format_value, athena_type=athena_type)


def format_value(value: Any, athena_type: str) -> str | None:
    """One value as the text Athena returns in ``VarCharValue`` and the result CSV (None for NULL)."""
    if value is None:
        return None
    if athena_type in ("double", "float"):
        return format_double(float(value))
    if athena_type == "decimal":
        return format(Decimal(value), "f")
    if athena_type in ("array", "map", "row"):
        return _format_nested(value)
    if athena_type == "varbinary" and isinstance(value, (bytes, bytearray, memoryview)):
        return " ".join(f"{b:02x}" for b in bytes(value))
    return _format_scalar(value)


def _format_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format_double(value)
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, _dt.datetime):
        text = f"{value:%Y-%m-%d %H:%M:%S}.{value.microsecond // 1000:03d}"
        if value.tzinfo is not None:
            text += f" {value.tzname() or 'UTC'}"
        return text
    if isinstance(value, _dt.date):
        return value.isoformat()
    if isinstance(value, _dt.time):
        return f"{value:%H:%M:%S}.{value.microsecond // 1000:03d}"
    if isinstance(value, _dt.timedelta):
        total_ms = round(value.total_seconds() * 1000)
        sign = "-" if total_ms < 0 else ""
        days, rest = divmod(abs(total_ms), 86_400_000)
        hours, rest = divmod(rest, 3_600_000)
        minutes, rest = divmod(rest, 60_000)
        seconds, millis = divmod(rest, 1000)
        return f"{sign}{days} {hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"
    return str(value)


def _format_nested(value: Any) -> str:
    """Arrays as ``[1, 2]``, maps and rows as ``{k=v, ...}`` (Athena's rendering)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_nested_item(k)}={_nested_item(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_nested_item(v) for v in value) + "]"
    return _format_scalar(value)


def _nested_item(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list, tuple)):
        return _format_nested(value)
    return _format_scalar(value)


def _quote(value: str | None) -> str:
    return "" if value is None else '"' + value.replace('"', '""') + '"'


def to_csv(columns: Sequence[Column], rows: Iterable[Sequence[str | None]]) -> bytes:
    """The result file of a query: header, then rows; every value quoted, NULL an empty field."""
    lines = [",".join(_quote(c.name) for c in columns)]
    lines.extend(",".join(_quote(v) for v in row) for row in rows)
    return ("\n".join(lines) + "\n").encode("utf-8")


def to_text(rows: Iterable[Sequence[str | None]]) -> bytes:
    """The result file of a DDL/utility statement: one row per line, tab-separated, no header."""
    return "".join("\t".join(v or "" for v in row) + "\n" for row in rows).encode("utf-8")


def parse_csv(data: bytes) -> tuple[list[str], list[tuple[str | None, ...]]]:
    """Read back a result file written by :func:`to_csv`, keeping NULL (unquoted empty) apart from ``""``."""
    text = data.decode("utf-8")
    records: list[tuple[str | None, ...]] = []
    fields: list[str | None] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == '"':
            j, chunk = i + 1, []
            while True:
                k = text.index('"', j)
                chunk.append(text[j:k])
                if k + 1 < n and text[k + 1] == '"':
                    chunk.append('"')
                    j = k + 2
                    continue
                i = k + 1
                break
            fields.append("".join(chunk))
        else:
            fields.append(None)
        if i >= n or text[i] == "\n":
            records.append(tuple(fields))
            fields = []
        i += 1  # skip the separator (',' or newline)
    if not records:
        return [], []
    header = [h or "" for h in records[0]]
    return header, records[1:]
