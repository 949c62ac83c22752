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


class MemoryBucket:
    """An S3 bucket in a dict: the put_object / get_object / delete_object the processor calls."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def put_object(self, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:
        self.objects[Key] = Body
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        import io

        from botocore.exceptions import ClientError

        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}

    def delete_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        self.objects.pop(Key, None)
        return {}

    def data(self, prefix: str) -> dict[str, bytes]:
        """The objects under ``prefix``."""
        return {k: v for k, v in self.objects.items() if k.startswith(prefix)}


class MemoryTable:
    """A DynamoDB table in a dict: BatchWriteItem (puts and deletes) and the processor's marks."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}
        self.marks: list[tuple[str, str, str, str]] = []  # (symbol, timestamp, trend_from, trend_bars)

    def refused(self, request: dict[str, Any]) -> bool:
        """Whether this write request comes back unprocessed (none, here)."""
        return False

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        unprocessed = []
        for request in requests:
            if self.refused(request):
                unprocessed.append(request)
            elif "PutRequest" in request:
                item = request["PutRequest"]["Item"]
                self.items[(item["symbol"]["S"], item["timestamp"]["S"])] = item
            else:
                key = request["DeleteRequest"]["Key"]
                self.items.pop((key["symbol"]["S"], key["timestamp"]["S"]), None)
        return {"UnprocessedItems": {table: unprocessed} if unprocessed else {}}

    def update_item(self, **request: Any) -> dict[str, Any]:
        key = (request["Key"]["symbol"]["S"], request["Key"]["timestamp"]["S"])
        values = request["ExpressionAttributeValues"]
        self.items[key] = {**self.items[key], "trend_from": values[":f"], "trend_bars": values[":n"]}
        self.marks.append((*key, values[":f"]["S"], values[":n"]["N"]))
        return {}

    def delete_item(self, **request: Any) -> dict[str, Any]:
        """DeleteItem with the processor's one condition: ``processed_at IN (:p0, :p1, ...)``."""
        from botocore.exceptions import ClientError

        key = (request["Key"]["symbol"]["S"], request["Key"]["timestamp"]["S"])
        item = self.items.get(key)
        if item is None or item.get("processed_at") not in request["ExpressionAttributeValues"].values():
            raise ClientError({"Error": {"Code": "ConditionalCheckFailedException"}}, "DeleteItem")
        del self.items[key]
        return {}
