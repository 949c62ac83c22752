"""A pipeline deployed with other Glue names registers its partitions in its own table.

Reproduces issue 8: the Lambda environment once carried 8 hand-picked settings and no Glue
names, so a second pipeline's processor registered its partitions in the default
``stock_trend.raw_quotes`` table and its own table stayed empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from isolated_pipeline import renamed

from helpers.pipeline import aws
from helpers.pipeline.config import Settings

pytestmark = pytest.mark.integration

QUOTES = 60  # 3 symbols x 20 one-minute rounds: 3 partitions (one day each)
WAIT_SECONDS = 120.0


def _partitions(s: Settings, database: str, table: str) -> list[dict]:
    pages = (
        aws.client("glue", s).get_paginator("get_partitions").paginate(DatabaseName=database, TableName=table)
    )
    return [p for page in pages for p in page["Partitions"]]


@pytest.fixture()
def default_table(local_stack: Settings) -> Iterator[Settings]:
    """The default Glue table exists, so partitions wrongly sent there would land there."""
    from helpers.pipeline import catalog

    glue = aws.client("glue", local_stack)
    created = local_stack.glue_database not in {d["Name"] for d in glue.get_databases()["DatabaseList"]}
    catalog.ensure_table(local_stack, glue=glue)
    yield local_stack
    if created:
        glue.delete_table(DatabaseName=local_stack.glue_database, Name=local_stack.glue_table)
        glue.delete_database(Name=local_stack.glue_database)


@pytest.fixture()
def second_pipeline(local_stack: Settings, default_table: Settings, tmp_path: Path) -> Iterator[Settings]:
    from deploy.functions import deploy_functions
    from deploy.provision import provision, teardown

    s = renamed(local_stack, "glue")
    provision(s)
    try:
        deploy_functions(s, functions=["processor"], build_dir=tmp_path / "build")
        yield s
    finally:
        teardown(s)


def test_partitions_land_in_the_pipelines_own_glue_table(second_pipeline: Settings) -> None:
    from helpers.notebook.producer import produce
    from helpers.notebook.sources import synthetic
    from helpers.notebook.verify import wait_for_processing

    # GIVEN a second pipeline whose Glue database and table are not the defaults
    s = second_pipeline
    default_before = _partitions(s, "stock_trend", "raw_quotes")

    # WHEN its processor archives quotes
    summary = produce(synthetic(3, QUOTES), s)
    assert (summary.records, summary.failed) == (QUOTES, 0)
    counts = wait_for_processing(s, expected=QUOTES, timeout=WAIT_SECONDS)
    assert counts["settled"], counts

    # THEN its own table has the partitions, and the default table gained none of them
    own = _partitions(s, s.glue_database, s.glue_table)
    assert len(own) == 3
    assert all(p["StorageDescriptor"]["Location"].startswith(s.raw_location) for p in own)
    default_after = _partitions(s, "stock_trend", "raw_quotes")
    assert not [
        p for p in default_after if p["StorageDescriptor"]["Location"].startswith(f"s3://{s.raw_bucket}/")
    ]
    assert len(default_after) == len(default_before)
