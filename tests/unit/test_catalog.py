"""Glue partition registration (helpers.pipeline.catalog) with an in-memory Glue stand-in."""

from __future__ import annotations

from typing import Any

import pytest

from helpers.core.errors import PipelineError
from helpers.pipeline import catalog
from helpers.pipeline.config import load_settings

SETTINGS = load_settings(environ={})


class MemoryGlue:
    """batch_create_partition answering per entry: known partitions exist, ``refuse`` fails."""

    def __init__(self, known: set[tuple[str, str]], refuse: str = "") -> None:
        self.known = known
        self.refuse = refuse
        self.calls: list[int] = []

    def batch_create_partition(self, PartitionInputList: list[dict[str, Any]], **_: Any) -> dict[str, Any]:
        self.calls.append(len(PartitionInputList))
        errors = []
        for entry in PartitionInputList:
            values = tuple(entry["Values"])
            code = "AlreadyExistsException" if values in self.known else ""
            code = "AccessDeniedException" if values[0] == self.refuse else code
            if code:
                errors.append(
                    {
                        "PartitionValues": list(values),
                        "ErrorDetail": {"ErrorCode": code, "ErrorMessage": "no"},
                    }
                )
            else:
                self.known.add((values[0], values[1]))
        return {"Errors": errors}


def test_register_partitions_counts_new_ones_in_chunks_of_the_glue_limit() -> None:
    glue = MemoryGlue(known={("S000", "2026-07-29")})
    wanted = [(f"S{n:03d}", "2026-07-29") for n in range(150)]
    assert catalog.register_partitions(SETTINGS, wanted + wanted[:3], glue) == 149
    assert glue.calls == [catalog.BATCH_CREATE_PARTITION_MAX, 50]
    assert catalog.register_partitions(SETTINGS, [], glue) == 0 and len(glue.calls) == 2


def test_a_refused_partition_raises_a_pipeline_error_naming_the_table_and_the_next_step() -> None:
    glue = MemoryGlue(known=set(), refuse="AAPL")
    with pytest.raises(catalog.CatalogError) as err:
        catalog.register_partitions(SETTINGS, [("AAPL", "2026-07-29")], glue)
    assert isinstance(err.value, PipelineError)
    message = str(err.value)
    assert (
        "['AAPL', '2026-07-29']" in message and f"{SETTINGS.glue_database}.{SETTINGS.glue_table}" in message
    )
    assert "AccessDeniedException: no" in message and "run 01_provision first" in message


def test_partitions_of_a_missing_bucket_name_the_notebook_that_creates_it() -> None:
    """05 before 01: the archive's bucket does not exist yet (was a bare NoSuchBucket)."""
    from botocore.exceptions import ClientError

    from helpers.core.errors import ResourceMissingError

    class NoBucket:
        def get_paginator(self, name: str) -> NoBucket:
            return self

        def paginate(self, **kwargs: Any) -> Any:
            raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": "none"}}, "ListObjectsV2")

    s = load_settings(environ={})
    with pytest.raises(
        ResourceMissingError, match=f"S3 bucket {s.raw_bucket} does not exist: run 01_provision"
    ):
        catalog.discover_partitions(s, NoBucket())
