"""Errors of the local Athena endpoint, with Athena's codes and messages."""

from __future__ import annotations

from typing import Any

__all__ = ["AthenaApiError", "invalid", "validation"]


class AthenaApiError(Exception):
    """An API error as Athena returns it: ``__type``, ``Message`` and, for requests, ``AthenaErrorCode``."""

    def __init__(self, code: str, message: str, *, status: int = 400, athena_code: str | None = None):
        self.code = code
        self.message = message
        self.status = status
        self.athena_code = athena_code
        super().__init__(f"{code}: {message}")

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"__type": self.code, "Message": self.message}
        if self.athena_code:
            data["AthenaErrorCode"] = self.athena_code
        return data


def invalid(message: str, athena_code: str = "INVALID_INPUT") -> AthenaApiError:
    return AthenaApiError("InvalidRequestException", message, athena_code=athena_code)


def validation(field_name: str, value: object, constraint: str) -> AthenaApiError:
    return invalid(
        f"1 validation error detected: Value '{value}' at '{field_name}' "
        f"failed to satisfy constraint: {constraint}"
    )
