"""The error the local factory answers with: an HTTP status and ``{"message": ..., "errors": [...]}``.

Status codes (the reference leaves them open, §6.1): 400 for a request that is invalid in itself
(bad JSON, types, ranges, a tampered or wrongly signed wave, UUIDs that do not match the wave),
401 without a valid OSF-TOKEN when served, 404 for an unknown factory, wave, group, device or file,
409 for a conflict with the factory's state (a duplicate name, a second active wave on a tag, an
operation on a wave that is no longer active, rolling out or completing an expired wave, deleting a
group that still has devices), 413 for a body over the size limit and 415 for a body that is not
``application/json`` (requestbody.py).
"""

from __future__ import annotations

from typing import TypedDict


class ErrorBody(TypedDict):
    message: str
    errors: list[str]


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: list[str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors if errors is not None else []

    def body(self) -> ErrorBody:
        return {"message": self.message, "errors": self.errors}


def bad_request(message: str, errors: list[str] | None = None) -> ApiError:
    return ApiError(400, message, errors)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


def conflict(message: str, errors: list[str] | None = None) -> ApiError:
    return ApiError(409, message, errors)
