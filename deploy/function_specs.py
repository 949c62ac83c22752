"""What the two Lambda functions are: handler, limits, and their event source mappings (data).

``deploy/functions.py`` deploys exactly these; adding a function is one :class:`FunctionSpec`
and one :class:`MappingSpec` here, plus its handler in ``deploy/package.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from deploy.package import HANDLERS
from helpers.core.trend_plan import TREND_FROM

__all__ = [
    "ARCHITECTURES",
    "FUNCTION_SPECS",
    "MAPPING_SPECS",
    "RUNTIME",
    "TREND_MARKS",
    "FunctionSpec",
    "MappingSpec",
]

# An Amazon Linux 2023 runtime, supported by Lambda into 2029. The local stack runs it under an
# installed python3.13, else on its own Python with a warning (deploy.local._lambda.workers).
RUNTIME = "python3.13"
ARCHITECTURES = ["x86_64"]


@dataclass(frozen=True)
class FunctionSpec:
    kind: str
    handler: str
    timeout: int
    memory_mb: int
    description: str
    name_field: str  # Settings field holding the function name
    role_field: str  # Settings field holding the execution role name


@dataclass(frozen=True)
class MappingSpec:
    batch_size: int
    window_seconds: int
    starting_position: str = "TRIM_HORIZON"
    report_item_failures: bool = True
    bisect: bool = True
    max_retries: int = 3
    filters: tuple[dict[str, Any], ...] = ()  # FilterCriteria patterns (ORed); empty: every record

    def desired(self, failure_queue_arn: str) -> dict[str, Any]:
        criteria = {"Filters": [{"Pattern": json.dumps(p, separators=(",", ":"))} for p in self.filters]}
        return {
            "FilterCriteria": criteria if self.filters else {},
            "BatchSize": self.batch_size,
            "MaximumBatchingWindowInSeconds": self.window_seconds,
            "FunctionResponseTypes": ["ReportBatchItemFailures"] if self.report_item_failures else [],
            "BisectBatchOnFunctionError": self.bisect,
            "MaximumRetryAttempts": self.max_retries,
            "DestinationConfig": {"OnFailure": {"Destination": failure_queue_arn}},
            "Enabled": True,
        }


FUNCTION_SPECS = {
    "processor": FunctionSpec(
        kind="processor",
        handler=HANDLERS["processor"],
        timeout=60,
        memory_mb=256,
        description="Stock trend pipeline: validates Kinesis quotes, archives them to S3, writes DynamoDB",
        name_field="processor_function",
        role_field="processor_role",
    ),
    "trend": FunctionSpec(
        kind="trend",
        handler=HANDLERS["trend"],
        timeout=60,
        memory_mb=256,
        description="Stock trend pipeline: SMA5/SMA20 crossovers from the processed stream, alerts to SNS",
        name_field="trend_function",
        role_field="trend_role",
    ),
}
# The trend Lambda evaluates only the processor's marks (the last item of each gap-free run, see
# helpers.core.trend_plan): Lambda drops every other record of the table's stream before batching,
# so the function is invoked for about one record per symbol and processor batch, not per item.
TREND_MARKS = {"dynamodb": {"NewImage": {TREND_FROM: {"S": [{"exists": True}]}}}}

# No batching window: a poller invokes as soon as records are there, so latency is one poll and one
# invocation, not a second of waiting; batches still fill up under load (Kinesis: 500 records,
# each an aggregate of up to 25 quotes; trend: up to 1,000 marks, one Query per symbol a batch).
MAPPING_SPECS = {
    "processor": MappingSpec(batch_size=500, window_seconds=0),
    "trend": MappingSpec(batch_size=1000, window_seconds=0, filters=(TREND_MARKS,)),
}
