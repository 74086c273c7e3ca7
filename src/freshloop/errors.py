"""One error root for freshloop, with machine-readable codes.

Domain code raises these; the CLI turns them into a one-line message and a non-zero exit code,
and the HTTP layer maps ``code`` to a status with :data:`HTTP_STATUS`. Messages name the field,
the rule and the value, following scikit-learn's parameter-error template.

Examples
--------
>>> err = SpecError(param_message("cooldown", "policy", "a duration >= 0", "-3d"), field="policy.cooldown")
>>> print(err)
The 'cooldown' parameter of policy must be a duration >= 0. Got '-3d' instead.
>>> err.code, HTTP_STATUS[err.code]
('invalid_spec', 422)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HTTP_STATUS",
    "BusyError",
    "ConflictError",
    "DataError",
    "FreshloopError",
    "IntegrityError",
    "NotFoundError",
    "SpecError",
    "TooLargeError",
    "param_message",
]


class FreshloopError(Exception):
    """Root of every error freshloop raises on purpose."""

    code = "freshloop_error"

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None,
                 value: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule
        self.value = value

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "field": self.field, "rule": self.rule}


class SpecError(FreshloopError):
    """The loop spec (YAML) is invalid."""

    code = "invalid_spec"


class DataError(FreshloopError):
    """Submitted data cannot be read at all (the submission itself is still kept)."""

    code = "invalid_data"


class NotFoundError(FreshloopError):
    code = "not_found"


class ConflictError(FreshloopError):
    """A compare-and-set lost, or an idempotency key was reused with other content."""

    code = "conflict"


class BusyError(FreshloopError):
    """Back-pressure: a bounded queue is full; retry later."""

    code = "busy"


class IntegrityError(FreshloopError):
    """A stored artifact does not match the hash the registry recorded for it."""

    code = "integrity"


class TooLargeError(FreshloopError):
    """A request larger than a limit it can never fit: sending it again will not help, smaller ones will."""

    code = "too_large"


HTTP_STATUS: dict[str, int] = {
    "freshloop_error": 500,
    "invalid_spec": 422,
    "invalid_data": 422,
    "not_found": 404,
    "conflict": 409,
    "integrity": 500,
    "busy": 503,
    "too_large": 413,
}


def param_message(param: str, owner: str, rule: str, value: Any) -> str:
    """The one template for parameter errors: parameter, owner, rule and value."""
    return f"The {param!r} parameter of {owner} must be {rule}. Got {value!r} instead."
