"""Trend Lambda: DynamoDB stream batches of processed bars -> SMA5/SMA20 crossover alerts on SNS.

The work is in :func:`helpers.pipeline.trend.evaluate_batch`; this handler only builds the settings and
clients once per execution environment and finds the topic in the function's own account.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings
from helpers.pipeline.trend import evaluate_batch, topic_arn_for_function

logging.getLogger("helpers").setLevel(logging.INFO)  # the runtime's root logger stays at WARNING


@functools.cache
def _clients(function_arn: str) -> tuple[Settings, Any, Any, str]:
    """Settings, clients and topic ARN, built once per execution environment."""
    settings = load_settings()
    topic = topic_arn_for_function(settings, function_arn)
    return settings, aws.client("dynamodb", settings), aws.client("sns", settings), topic


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    settings, dynamodb, sns, topic = _clients(context.invoked_function_arn)
    return evaluate_batch(event, settings, dynamodb=dynamodb, sns=sns, topic=topic)
