"""What the local stack's moto holds per record: nothing it does not need, stored compactly.

A census of the stack process after 50,000 records through the deployed pipeline (moto 5.2,
``python -m tests.bench.stack_census``) found ~7.6 KB of RSS per record, of which:

* **~4.4 KB was garbage moto keeps alive** (``moto/core/common_models.py``): ``BaseModel.__new__``
  appends every instance of every model to its class's ``instances_tracked`` list, for the
  ``/moto-api/data.json`` dashboard only, and nothing ever removes them. Every DynamoDB ``Item``
  ever built stays: the deep copy each Query and GetItem answer is built from, the item an
  overwrite or an update replaced, every SQS message deleted, every Kinesis record, every S3 key
  version. :func:`install_untracked` makes ``BaseModel.__new__`` create without recording (the
  dashboard lists only what existed before), so a model lives as long as moto refers to it.
* **2.3 KB per DynamoDB item** (``moto/dynamodb/models/dynamo_type.py``): an ``Item`` is a
  ``LimitedSizeDict`` of one ``DynamoType`` object (with its ``__dict__``) per attribute, ~31
  objects for a 13-attribute quote. :func:`pack` turns an item's attributes into the JSON bytes
  of their wire form (``{"price": {"N": "190.5"}, ...}``, ~0.45 KB) and :func:`unpack` builds a
  new ``Item`` equal to the one packed (same attribute order, types and values). The sorted
  partitions of :mod:`deploy.local.moto_speed` store packed items and unpack on every read, so
  each reader gets its own ``Item``, as moto's Query (a deep copy) already gave it; an
  ``UpdateItem``, which moto applies to the stored ``Item`` in place, is stored again packed.
  Values JSON cannot carry exactly (bytes, numbers that are not text) keep moto's ``Item``.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["install_untracked", "pack", "unpack"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False).encode
_loads = json.loads


class _NotPlain(Exception):
    """A value JSON would not give back exactly as it is."""


def _plain(value: Any) -> Any:
    """A DynamoType as its wire dict; raises :class:`_NotPlain` for what JSON cannot round-trip."""
    kind, inner = value.type, value.value
    if kind == "M":
        if type(inner) is not dict:
            raise _NotPlain(kind)
        return {kind: {k: _plain(v) for k, v in inner.items()}}
    if kind == "L":
        if type(inner) is not list:
            raise _NotPlain(kind)
        return {kind: [_plain(v) for v in inner]}
    if type(inner) is str or type(inner) is bool:
        return {kind: inner}
    if type(inner) is list and all(type(v) is str for v in inner):  # SS, NS, BS (base64 text)
        return {kind: inner}
    raise _NotPlain(kind)


def pack(item: Any) -> bytes | None:
    """The JSON bytes of ``item``'s attributes in wire form, or None if JSON cannot hold them exactly."""
    try:
        return _dumps({name: _plain(value) for name, value in item.attrs.items()}).encode()
    except (_NotPlain, AttributeError):
        return None


def unpack(blob: bytes, hash_key: Any, range_key: Any) -> Any:
    """A new moto ``Item`` equal to the packed one (``hash_key``/``range_key``: its DynamoTypes)."""
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    item = Item.__new__(Item)
    item.hash_key = hash_key
    item.range_key = range_key
    attrs = LimitedSizeDict.__new__(LimitedSizeDict)  # validated when written: no size checks again
    dict.update(attrs, ((name, DynamoType(wire)) for name, wire in _loads(blob).items()))
    item.attrs = attrs
    return item


# --------------------------------------------------------------------------- instance tracking


def install_untracked(patch: Any) -> None:
    """``BaseModel.__new__`` without the record in ``instances_tracked`` (``patch(owner, name, new)``)."""
    from moto.core.common_models import BaseModel

    def __new__(cls: type, *args: Any, **kwargs: Any) -> Any:
        return super(BaseModel, cls).__new__(cls)

    patch(BaseModel, "__new__", staticmethod(__new__))
