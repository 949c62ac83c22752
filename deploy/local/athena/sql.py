"""Trino SQL handling for the local Athena endpoint: parse, inspect, transpile, name errors.

Pure functions over sqlglot trees (no I/O), so each Athena/DuckDB difference the endpoint
papers over is unit-tested on its own:

* syntax errors carry Trino's ``line L:C:`` position and the ``SYNTAX_ERROR`` name;
* table references (CTE names excluded) and the partition predicates that prune them;
* unnamed output columns are named ``_col0``, ``_col1``... as Trino does;
* DuckDB errors get the Athena error name (``COLUMN_NOT_FOUND``, ``TABLE_NOT_FOUND``...)
  in front of DuckDB's own message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = [
    "QueryFailed",
    "clean_message",
    "engine_error",
    "first_line",
    "name_columns",
    "parse",
    "partition_filters",
    "position",
    "table_references",
    "transpile",
]


class QueryFailed(Exception):
    """The statement failed; ``reason`` is what Athena puts in ``StateChangeReason``."""

    def __init__(
        self, name: str, message: str, *, error_type: int = 1000, category: int = 2, retryable: bool = False
    ):
        self.name = name
        self.message = message
        self.error_type = error_type
        self.category = category
        self.retryable = retryable
        super().__init__(self.reason)

    @property
    def reason(self) -> str:
        return f"{self.name}: {self.message}"


def parse(sql: str) -> Any:
    """Parse one Trino statement; raise :class:`QueryFailed` with Athena's error names."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError, TokenError

    if not sql.strip():
        raise QueryFailed("SYNTAX_ERROR", "line 1:1: mismatched input '<EOF>'. Expecting: a statement")
    try:
        statements = [s for s in sqlglot.parse(sql, read="trino") if s is not None]
    except ParseError as err:
        first = err.errors[0] if err.errors else {}
        where = f"line {first.get('line', 1)}:{first.get('col', 1)}: " if first else ""
        description = first.get("description") or first_line(err)
        near = first.get("highlight")
        raise QueryFailed(
            "SYNTAX_ERROR", f"{where}{description}" + (f" (near {near!r})" if near else "")
        ) from err
    except TokenError as err:
        raise QueryFailed("SYNTAX_ERROR", f"line 1:1: {first_line(err)}") from err
    if len(statements) != 1:
        raise QueryFailed(
            "INVALID_INPUT", f"Only one sql statement is allowed. Got: {len(statements)}", error_type=1000
        )
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryFailed(
            "NOT_SUPPORTED",
            f"{type(tree).__name__.upper()} statements are not supported by the local endpoint",
        )
    return tree


def table_references(tree: Any) -> list[Any]:
    """The ``exp.Table`` nodes that name catalog tables (CTE names excluded)."""
    from sqlglot import exp

    ctes = {cte.alias_or_name.lower() for cte in tree.find_all(exp.CTE)}
    refs = []
    for table in tree.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier):
            raise QueryFailed(
                "NOT_SUPPORTED", f"table function {table.sql(dialect='trino')} is not supported"
            )
        if not table.db and table.name.lower() in ctes:
            continue
        refs.append(table)
    return refs


def partition_filters(ref: Any, keys: list[str]) -> dict[str, set[str]] | None:
    """Allowed values per partition key implied by the WHERE of the SELECT reading ``ref`` alone.

    Conservative: only top-level AND-ed ``key = 'v'`` and ``key IN ('v', ...)`` count, and only
    when ``ref`` is the only relation of its SELECT. None means "no pruning".
    """
    from sqlglot import exp

    if not keys or not isinstance(ref.parent, exp.From):
        return None
    select = ref.parent.parent
    if not isinstance(select, exp.Select) or select.args.get("joins") or not select.args.get("where"):
        return None
    names = {ref.name.lower(), ref.alias_or_name.lower()}
    found: dict[str, set[str]] = {}

    def column_key(node: Any) -> str | None:
        qualifier_ok = isinstance(node, exp.Column) and (not node.table or node.table.lower() in names)
        return str(node.name.lower()) if qualifier_ok and node.name.lower() in keys else None

    for conjunct in _conjuncts(select.args["where"].this):
        key, values = None, None
        if isinstance(conjunct, exp.EQ):
            left, right = conjunct.this, conjunct.expression
            if column_key(right) and _is_string(left):
                left, right = right, left
            key = column_key(left)
            values = {right.this} if key and _is_string(right) else None
        elif isinstance(conjunct, exp.In) and not conjunct.args.get("query"):
            key = column_key(conjunct.this)
            items = conjunct.expressions
            values = {i.this for i in items} if key and items and all(_is_string(i) for i in items) else None
        if key and values is not None:
            found[key] = found[key] & values if key in found else values
    return found or None


def name_columns(tree: Any) -> None:
    """Name unnamed output columns ``_col0``, ``_col1``... as Trino does."""
    from sqlglot import exp

    select = tree
    while isinstance(select, exp.SetOperation):
        select = select.this
    while isinstance(select, exp.Subquery):
        select = select.this
    if not isinstance(select, exp.Select):
        return
    for index, projection in enumerate(list(select.expressions)):
        if not isinstance(projection, (exp.Alias, exp.Column, exp.Star)):
            projection.replace(exp.alias_(projection.copy(), f"_col{index}", quoted=True))


def transpile(tree: Any) -> str:
    """DuckDB SQL for a parsed Trino statement (unsupported constructs fail, not silently change)."""
    from sqlglot.errors import ErrorLevel, UnsupportedError

    try:
        return str(tree.sql(dialect="duckdb", unsupported_level=ErrorLevel.RAISE))
    except UnsupportedError as err:
        raise QueryFailed("NOT_SUPPORTED", first_line(err)) from err


_ERROR_NAMES: tuple[tuple[str, str, str], ...] = (
    # (DuckDB exception class, message fragment, Athena/Trino error name)
    ("BinderException", "Referenced column", "COLUMN_NOT_FOUND"),
    ("BinderException", "not found in FROM clause", "COLUMN_NOT_FOUND"),
    ("BinderException", "must appear in the GROUP BY", "EXPRESSION_NOT_AGGREGATE"),
    ("BinderException", "No function matches", "FUNCTION_NOT_FOUND"),
    ("BinderException", "", "TYPE_MISMATCH"),
    ("CatalogException", "Table with name", "TABLE_NOT_FOUND"),
    ("CatalogException", "unction with name", "FUNCTION_NOT_FOUND"),
    ("CatalogException", "", "SEMANTIC_ERROR"),
    ("ParserException", "", "SYNTAX_ERROR"),
    ("ConversionException", "", "INVALID_CAST_ARGUMENT"),
    ("OutOfRangeException", "", "NUMERIC_VALUE_OUT_OF_RANGE"),
    ("InvalidInputException", "", "INVALID_FUNCTION_ARGUMENT"),
    ("NotImplementedException", "", "NOT_SUPPORTED"),
    ("OutOfMemoryException", "", "EXCEEDED_LOCAL_MEMORY_LIMIT"),
)


def engine_error(err: BaseException) -> QueryFailed:
    """Athena's error name for a DuckDB error, with DuckDB's own message."""
    kind = type(err).__name__
    message = clean_message(str(err))
    for cls, fragment, name in _ERROR_NAMES:
        if kind == cls and fragment in message:
            return QueryFailed(name, message)
    return QueryFailed("GENERIC_INTERNAL_ERROR", message, error_type=200, category=1)


# --- small utilities --------------------------------------------------------------------


def _conjuncts(node: Any) -> Iterable[Any]:
    from sqlglot import exp

    if isinstance(node, exp.And):
        yield from _conjuncts(node.this)
        yield from _conjuncts(node.expression)
    elif isinstance(node, exp.Paren):
        yield from _conjuncts(node.this)
    else:
        yield node


def _is_string(node: Any) -> bool:
    from sqlglot import exp

    return isinstance(node, exp.Literal) and bool(node.is_string)


def position(ref: Any) -> str:
    """``line L:C: `` of a table reference, as Trino prefixes its messages."""
    first = next((p for p in (ref.args.get("catalog"), ref.args.get("db"), ref.this) if p is not None), None)
    meta = getattr(first, "meta", None) or {}
    if "line" not in meta or "col" not in meta:
        return ""
    width = meta.get("end", 0) - meta.get("start", 0)
    return f"line {meta['line']}:{max(1, meta['col'] - width)}: "


def first_line(err: BaseException) -> str:
    return clean_message(str(err)).split("\n", 1)[0]


def clean_message(message: str) -> str:
    """Drop ANSI highlighting and DuckDB's ``Xxx Error:`` prefix; keep the hint lines."""
    message = re.sub(r"\x1b\[[0-9;]*m", "", message)
    message = message.split("\nLINE ", 1)[0]  # the position refers to the transpiled SQL
    message = re.sub(r"^[A-Za-z ]+ Error: ", "", message.strip())
    return re.sub(r"\n\s*\n", "\n", message).strip()
