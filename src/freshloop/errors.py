"""One error root for freshloop, with machine-readable codes.

Every error freshloop raises derives from :class:`FreshloopError`; each class says its ``code`` and its
HTTP ``status`` once (:data:`HTTP_STATUS` is read from them). The CLI turns them into a one-line message
and a non-zero exit code, the HTTP layer into a JSON answer with that status. Messages name the field,
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
    "AuthError",
    "BusyError",
    "ConflictError",
    "DataError",
    "ForbiddenError",
    "FreshloopError",
    "IntegrityError",
    "InvalidRequestError",
    "InvalidValueError",
    "MethodNotAllowedError",
    "NotFoundError",
    "SpecError",
    "TooLargeError",
    "TrainingFailed",
    "UnreadableBodyError",
    "UnsupportedMediaError",
    "error_classes",
    "param_message",
]


class FreshloopError(Exception):
    """Root of every error freshloop raises on purpose; ``status`` is its HTTP answer."""

    code = "freshloop_error"
    status = 500

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
    status = 422


class DataError(FreshloopError):
    """Submitted data cannot be read at all (the submission itself is still kept)."""

    code = "invalid_data"
    status = 422


class InvalidValueError(FreshloopError, ValueError):
    """A value given to the Python API breaks its rule (a duration that does not parse, a clock moved back);
    a ``ValueError`` too, as Python callers and pydantic validators expect."""

    code = "invalid_value"
    status = 422


class InvalidRequestError(FreshloopError):
    """A request that breaks a rule of its operation's schema: the message names the field, the rule and the
    value."""

    code = "invalid_request"
    status = 422


class UnreadableBodyError(FreshloopError):
    """A body that cannot be read as JSON."""

    code = "unreadable_body"
    status = 400


class TrainingFailed(FreshloopError):
    """The estimator could not be trained on this snapshot (kept as a failed run, never served)."""

    code = "training_failed"
    status = 422


class NotFoundError(FreshloopError):
    """No such model version, rollout or prediction; or no champion yet."""

    code = "not_found"
    status = 404


class MethodNotAllowedError(FreshloopError):
    """The path exists, not with this method."""

    code = "method_not_allowed"
    status = 405


class ConflictError(FreshloopError):
    """A compare-and-set lost, or an idempotency key was reused with other content."""

    code = "conflict"
    status = 409


class BusyError(FreshloopError):
    """Back-pressure: a bounded queue is full; retry later."""

    code = "busy"
    status = 503


class IntegrityError(FreshloopError):
    """A stored artifact does not match the hash the registry recorded for it, or is not signed."""

    code = "integrity"
    status = 500


class TooLargeError(FreshloopError):
    """A request larger than a limit it can never fit: sending it again will not help, smaller ones will."""

    code = "too_large"
    status = 413


class UnsupportedMediaError(FreshloopError):
    """A file upload of a content type freshloop does not read."""

    code = "unsupported_media_type"
    status = 415


class AuthError(FreshloopError):
    """No bearer token, or one the server does not know."""

    code = "unauthorized"
    status = 401


class ForbiddenError(FreshloopError):
    """The token's role may not do this."""

    code = "forbidden"
    status = 403


def error_classes() -> list[type[FreshloopError]]:
    """The root and every class below it, each once, parents first."""
    found: list[type[FreshloopError]] = [FreshloopError]
    for cls in found:
        found.extend(c for c in cls.__subclasses__() if c not in found)
    return found


HTTP_STATUS: dict[str, int] = {cls.code: cls.status for cls in error_classes()}


def param_message(param: str, owner: str, rule: str, value: Any) -> str:
    """The one template for parameter errors: parameter, owner, rule and value."""
    return f"The {param!r} parameter of {owner} must be {rule}. Got {value!r} instead."
