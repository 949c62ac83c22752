"""Read the processed price series back from DynamoDB, symbol by symbol, with Query.

The processed table is keyed (symbol, timestamp), so one symbol's series is one paged Query in
timestamp order. Without a symbol list, the symbols are found first with a Scan that projects
the key only.

This is the one place where DynamoDB items become plain values for the notebooks:
:func:`plain_item` (numbers as float, the integer fields as int) and :func:`items_frame` (the
sorted DataFrame). :mod:`helpers.notebook.verify` and :mod:`helpers.notebook.alerts` use them
too, and :func:`missing_as_error` turns "no such table/bucket/queue" into a
:class:`~helpers.core.errors.ResourceMissingError` that says to run 01_provision.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pandas as pd
from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError

from helpers.core.errors import ResourceMissingError
from helpers.core.trend_plan import TREND_BARS, TREND_FROM
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "EMPTY_COLUMNS",
    "PROCESSED_INTEGER_FIELDS",
    "items_frame",
    "missing_as_error",
    "plain_item",
    "processed_bars",
    "processed_frame",
    "processed_items",
    "symbols_in_table",
]

log = logging.getLogger(__name__)

PROCESSED_INTEGER_FIELDS = frozenset({"volume"})
"""Number attributes of a processed item read as int; every other number is a float."""
EMPTY_COLUMNS = ("symbol", "timestamp", "price")
"""Columns of :func:`items_frame` when there are no items."""

_deserializer = TypeDeserializer()  # stateless: one for every read


def plain_item(
    item: Mapping[str, Any], integer_fields: Collection[str] = PROCESSED_INTEGER_FIELDS
) -> dict[str, Any]:
    """A DynamoDB-typed item (``{"price": {"N": "1.5"}, ...}``) as plain Python values.

    Numbers named in ``integer_fields`` become int, every other number a float (DynamoDB hands
    back :class:`~decimal.Decimal`, which pandas and charts treat as objects); strings, booleans
    and the rest stay as the deserializer returns them.
    """
    return {
        name: _plain(name, _deserializer.deserialize(value), integer_fields) for name, value in item.items()
    }


def _plain(name: str, value: Any, integer_fields: Collection[str]) -> Any:
    if isinstance(value, Decimal):
        return int(value) if name in integer_fields else float(value)
    return value


def items_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Plain items (:func:`plain_item`) as a DataFrame sorted by symbol and timestamp.

    The processor's marks for the trend Lambda (``trend_from``, ``trend_bars`` on the last item of
    each run it wrote) are bookkeeping, not data: left out. No rows give an empty frame with the
    columns :data:`EMPTY_COLUMNS`.
    """
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return pd.DataFrame(columns=list(EMPTY_COLUMNS))
    frame = frame.drop(columns=[c for c in (TREND_FROM, TREND_BARS) if c in frame.columns])
    return frame.sort_values(["symbol", "timestamp"], kind="stable").reset_index(drop=True)


@contextmanager
def missing_as_error(what: str, *codes: str) -> Iterator[None]:
    """Raise :class:`ResourceMissingError` ("``what`` does not exist: run 01_provision first")
    for a ``ClientError`` whose code is one of ``codes`` (default: ResourceNotFoundException).

    Any other error passes unchanged.
    """
    try:
        yield
    except ClientError as err:
        if aws.is_missing(err, *codes):
            raise ResourceMissingError(f"{what} does not exist: run 01_provision first") from err
        raise


def symbols_in_table(settings: Settings | None = None, *, dynamodb: Any = None) -> list[str]:
    """The distinct symbols of the processed table (a key-only Scan), sorted."""
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    found: set[str] = set()
    with missing_as_error(f"DynamoDB table {s.table_name}"):
        pages = dynamodb.get_paginator("scan").paginate(
            TableName=s.table_name, ProjectionExpression="#s", ExpressionAttributeNames={"#s": "symbol"}
        )
        for page in pages:
            found.update(item["symbol"]["S"] for item in page.get("Items", []))
    return sorted(found)


def processed_items(settings: Settings | None, symbol: str, *, dynamodb: Any = None) -> list[dict[str, Any]]:
    """Every processed item of ``symbol`` in timestamp order, numbers as float (volume as int)."""
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    rows: list[dict[str, Any]] = []
    with missing_as_error(f"DynamoDB table {s.table_name}"):
        pages = dynamodb.get_paginator("query").paginate(
            TableName=s.table_name,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "symbol"},
            ExpressionAttributeValues={":s": {"S": symbol}},
        )
        for page in pages:
            rows.extend(plain_item(item) for item in page.get("Items", []))
    return rows


def processed_bars(
    settings: Settings | None, symbol: str, *, dynamodb: Any = None
) -> list[tuple[str, float]]:
    """``(timestamp, price)`` bars of ``symbol`` in order: the input of ``indicators.crossovers``."""
    return [(row["timestamp"], row["price"]) for row in processed_items(settings, symbol, dynamodb=dynamodb)]


def processed_frame(
    settings: Settings | None = None, symbols: Iterable[str] | None = None, *, dynamodb: Any = None
) -> pd.DataFrame:
    """The processed series of ``symbols`` (default: every symbol in the table) as a DataFrame.

    Sorted by symbol and timestamp; numbers as float, volume as int (see :func:`items_frame`).
    """
    s = settings or load_settings()
    dynamodb = dynamodb or aws.client("dynamodb", s)
    wanted = sorted(set(symbols)) if symbols is not None else symbols_in_table(s, dynamodb=dynamodb)
    rows = [row for symbol in wanted for row in processed_items(s, symbol, dynamodb=dynamodb)]
    log.info("read %d processed bars of %d symbol(s) from %s", len(rows), len(wanted), s.table_name)
    return items_frame(rows)
