"""Kinesis event builders shared by the processor's unit tests (records as Lambda delivers them)."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

from helpers.core.quotes import Quote

SHARD = "shardId-000000000000"
NOW = "2026-07-29T14:00:00Z"
ARRIVAL = 1785331801.5  # 2026-07-29T13:30:01.5Z


def quote(symbol: str, minute: int, price: float = 100.0, day: str = "2026-07-29") -> Quote:
    return Quote(symbol, f"{day}T13:{minute:02d}:00Z", price, 99.0, 99.5, price + 1, price - 1, 10, "test")


def entry(seq: int, data: bytes, shard: str = SHARD, key: str = "K") -> dict[str, Any]:
    return {
        "kinesis": {
            "partitionKey": key,
            "sequenceNumber": str(seq),
            "data": base64.b64encode(data).decode(),
            "approximateArrivalTimestamp": ARRIVAL,
        },
        "eventID": f"{shard}:{seq}",
    }


def event(entries: Iterable[tuple[int, bytes | Quote]], shard: str = SHARD) -> dict[str, Any]:
    return {
        "Records": [
            entry(seq, data.to_json() if isinstance(data, Quote) else data, shard) for seq, data in entries
        ]
    }
