"""Settings for a pipeline of its own on the session's shared local stack."""

from __future__ import annotations

import dataclasses
import uuid

from deploy.function_specs import FUNCTION_SPECS
from helpers.pipeline.config import Settings
from helpers.pipeline.resources import RESOURCES


def renamed(base: Settings, prefix: str) -> Settings:
    """``base`` with every resource and function named afresh (``<prefix>-<tag>-...``).

    The fields come from the resource registry and the function specs, so a resource added there
    is isolated here too.
    """
    tag = f"{prefix}-{uuid.uuid4().hex[:6]}"
    fields = [r.field for r in RESOURCES] + [spec.name_field for spec in FUNCTION_SPECS.values()]
    changes = {}
    for field in fields:
        value = str(getattr(base, field))
        if field.startswith("glue_"):  # lower-case letters, digits and '_'
            rest = value.removeprefix("stock_trend").strip("_")
            changes[field] = "_".join(filter(None, (tag.replace("-", "_"), rest)))
        else:
            rest = value.removeprefix("stock-trend").strip("-")
            changes[field] = "-".join(filter(None, (tag, rest)))
    return dataclasses.replace(base, **changes)
