"""Processor Lambda: Kinesis quote batches -> S3 raw archive, quarantine and DynamoDB.

Not powertools' BatchProcessor: it runs a handler per record, which would defeat the batched
writes (25 items per BatchWriteItem, one S3 object per partition) that this function exists for.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings
from helpers.pipeline.processor import process_batch

logging.getLogger("helpers").setLevel(logging.INFO)  # the runtime's root logger stays at WARNING


@functools.cache
def _clients() -> tuple[Settings, Any, Any, Any]:
    """Settings and clients, built once per execution environment: in Lambda's init phase."""
    settings = load_settings()
    return (
        settings,
        aws.client("s3", settings),
        aws.client("dynamodb", settings),
        aws.client("glue", settings),
    )


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    # Built at import, in the init phase (its own 10 s), not in the first invocation: with a short
    # Timeout, a cold start that spends it on clients would time out, and a fresh worker again.
    _clients()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings, s3, dynamodb, glue = _clients()
    return process_batch(event, settings, s3=s3, dynamodb=dynamodb, glue=glue)
