"""One exception hierarchy for the whole pipeline.

Every error names what is wrong and what to do next, so that a notebook cell that
fails tells its reader how to recover ("run 01_provision first").
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DeployError",
    "LocalStackError",
    "ParameterError",
    "PipelineError",
    "ProducerError",
    "QueryError",
    "ResourceMissingError",
    "SourceError",
]


class PipelineError(Exception):
    """Base class for every error raised by the pipeline's own code."""


class ConfigError(PipelineError, ValueError):
    """A setting is invalid. Raised while loading settings, before any AWS call."""

    def __init__(self, field: str, value: object, problem: str, fix: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        self.fix = fix
        super().__init__(f"setting {field}={value!r}: {problem}. Fix: {fix}")


class ParameterError(PipelineError, ValueError):
    """An argument or notebook parameter is out of range; the message names it and what is allowed."""


class ResourceMissingError(PipelineError):
    """An AWS resource the step needs does not exist (yet)."""


class LocalStackError(PipelineError):
    """The embedded local stack could not be started, reached or stopped."""


class SourceError(PipelineError):
    """A quote source could not deliver quotes (unreachable, unknown symbol, bad data)."""


class ProducerError(PipelineError):
    """Records could not be put on the stream after every retry."""


class DeployError(PipelineError):
    """Packaging or deploying the Lambda functions failed."""


class QueryError(PipelineError):
    """An Athena query failed; the message carries the engine's reason."""
