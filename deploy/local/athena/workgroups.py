"""Workgroups of the local Athena endpoint: the record, its validation and its updates."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from deploy.local.athena.exceptions import invalid, validation

__all__ = [
    "ENGINE_VERSION",
    "PRIMARY",
    "WorkGroup",
    "check_configuration",
    "check_name",
    "updated_configuration",
]

PRIMARY = "primary"
MIN_BYTES_SCANNED_CUTOFF = 10_000_000
ENGINE_VERSION = {"SelectedEngineVersion": "AUTO", "EffectiveEngineVersion": "Athena engine version 3"}
_UPDATABLE = (
    "EnforceWorkGroupConfiguration",
    "PublishCloudWatchMetricsEnabled",
    "RequesterPaysEnabled",
    "BytesScannedCutoffPerQuery",
    "EngineVersion",
)
_RESULT_SETTINGS = ("OutputLocation", "EncryptionConfiguration", "ExpectedBucketOwner", "AclConfiguration")


@dataclass
class WorkGroup:
    name: str
    description: str = ""
    state: str = "ENABLED"
    configuration: dict[str, Any] = field(default_factory=dict)
    creation_time: float = field(default_factory=time.time)
    tags: list[dict[str, str]] = field(default_factory=list)

    @property
    def output_location(self) -> str | None:
        location = self.configuration.get("ResultConfiguration", {}).get("OutputLocation")
        return str(location) if location else None

    @property
    def enforced(self) -> bool:
        return bool(self.configuration.get("EnforceWorkGroupConfiguration", False))

    @property
    def bytes_cutoff(self) -> int | None:
        cutoff = self.configuration.get("BytesScannedCutoffPerQuery")
        return int(cutoff) if cutoff else None

    def to_dict(self) -> dict[str, Any]:
        configuration = {
            "EnforceWorkGroupConfiguration": False,
            "PublishCloudWatchMetricsEnabled": False,
            "RequesterPaysEnabled": False,
            "EngineVersion": ENGINE_VERSION,
            **self.configuration,
        }
        return {
            "Name": self.name,
            "State": self.state,
            "Configuration": configuration,
            "Description": self.description,
            "CreationTime": self.creation_time,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "State": self.state,
            "Description": self.description,
            "CreationTime": self.creation_time,
            "EngineVersion": ENGINE_VERSION,
        }


def updated_configuration(configuration: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """The configuration after an ``UpdateWorkGroup`` ``ConfigurationUpdates`` (validated)."""
    configuration = dict(configuration)
    for key in _UPDATABLE:
        if key in updates:
            configuration[key] = updates[key]
    if updates.get("RemoveBytesScannedCutoffPerQuery"):
        configuration.pop("BytesScannedCutoffPerQuery", None)
    result_updates = updates.get("ResultConfigurationUpdates", {})
    result = dict(configuration.get("ResultConfiguration", {}))
    for key in _RESULT_SETTINGS:
        if result_updates.get(f"Remove{key}"):
            result.pop(key, None)
        elif key in result_updates:
            result[key] = result_updates[key]
    configuration["ResultConfiguration"] = result
    check_configuration(configuration)
    return configuration


def check_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9._-]{1,128}", name):
        raise validation(
            "name", name, "Member must satisfy regular expression pattern: [a-zA-Z0-9._-]{1,128}"
        )


def check_configuration(configuration: dict[str, Any]) -> None:
    cutoff = configuration.get("BytesScannedCutoffPerQuery")
    if cutoff is not None and int(cutoff) < MIN_BYTES_SCANNED_CUTOFF:
        raise validation(
            "bytesScannedCutoffPerQuery",
            cutoff,
            f"Member must have value greater than or equal to {MIN_BYTES_SCANNED_CUTOFF}",
        )
    location = configuration.get("ResultConfiguration", {}).get("OutputLocation")
    if location and not str(location).startswith("s3://"):
        raise invalid(f"outputLocation {location} is not a valid S3 location.")
