"""What the two Lambda functions are: handler, limits, and their event source mappings (data).

``deploy/functions.py`` deploys exactly these; adding a function is one :class:`FunctionSpec`
and one :class:`MappingSpec` here, plus its handler in ``deploy/package.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deploy.package import HANDLERS

__all__ = ["ARCHITECTURES", "FUNCTION_SPECS", "MAPPING_SPECS", "RUNTIME", "FunctionSpec", "MappingSpec"]

RUNTIME = "python3.11"
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

    def desired(self, failure_queue_arn: str) -> dict[str, Any]:
        return {
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
# No batching window: a poller invokes as soon as records are there, so latency is one poll and one
# invocation, not a second of waiting; batches still fill up under load (Kinesis: 500 records,
# each an aggregate of up to 25 quotes; the trend Lambda's cost is per symbol and batch, so it
# takes up to 1,000 stream records at a time).
MAPPING_SPECS = {
    "processor": MappingSpec(batch_size=500, window_seconds=0),
    "trend": MappingSpec(batch_size=1000, window_seconds=0),
}
