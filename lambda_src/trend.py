"""Trend Lambda: DynamoDB stream batches of processed bars -> SMA5/SMA20 crossover alerts on SNS.

The work is in :func:`helpers.pipeline.trend.evaluate_batch`; this handler only builds the settings and
clients once per execution environment and finds the topic in the function's own account.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings
from helpers.pipeline.trend import evaluate_batch, topic_arn_for_function

logging.getLogger("helpers").setLevel(logging.INFO)  # the runtime's root logger stays at WARNING


@functools.cache
def _clients() -> tuple[Settings, Any, Any]:
    """Settings and clients, built once per execution environment: in Lambda's init phase."""
    settings = load_settings()
    return settings, aws.client("dynamodb", settings), aws.client("sns", settings)


@functools.cache
def _topic(function_arn: str) -> str:
    """The alert topic in the function's own account and partition."""
    return topic_arn_for_function(_clients()[0], function_arn)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
    _clients()  # at import, in the init phase, not in the first invocation's Timeout


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings, dynamodb, sns = _clients()
    topic = _topic(context.invoked_function_arn)
    return evaluate_batch(event, settings, dynamodb=dynamodb, sns=sns, topic=topic)
