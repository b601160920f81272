"""The one exception hierarchy of skiff.

Each class names its CLI exit code and its HTTP status. The CLI maps them to exit codes and one line
on stderr (``skiff.cli``); the REST API and the model server map them to a status code and a JSON body
``{"error": <class>, "message": ..., "detail": {...}}``. Raise with ``from`` to keep the cause.
"""

from __future__ import annotations

from typing import Any

from skiff.redact import redact_text

__all__ = [
    "SkiffError",
    "UsageError",
    "ConfigError",
    "SpecError",
    "InputError",
    "SourceError",
    "NotFoundError",
    "ConflictError",
    "GateFailed",
    "ValidationFailed",
    "StorageError",
    "EnvironmentMissing",
    "InvariantError",
]


class SkiffError(Exception):
    """Base class. Exit code 2, HTTP 400 unless a subclass says otherwise."""

    exit_code: int = 2
    http_status: int = 400

    def __init__(self, message: str, **detail: Any) -> None:
        # no URL credential reaches a log, a response or a terminal through an error, whoever raised it
        message = redact_text(message)
        detail = {k: redact_text(v) if isinstance(v, str) else v for k, v in detail.items()}
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body


class UsageError(SkiffError):
    """A command or request was called wrongly (unknown parameter, bad value). Exit 2, HTTP 400."""


class ConfigError(SkiffError):
    """skiff.yaml or a SKIFF_* variable is invalid. Exit 2, HTTP 500 (server misconfigured)."""

    http_status = 500


class SpecError(SkiffError):
    """A dataset spec is missing, unreadable or invalid. Exit 2, HTTP 422."""

    http_status = 422


class InputError(SkiffError):
    """The data given is unusable as a whole (empty, unknown format, missing column). Exit 2, HTTP 422."""

    http_status = 422


class SourceError(SkiffError):
    """A source could not be read: unreachable database or API, bad page, exhausted retries. Exit 2, HTTP 502."""

    http_status = 502


class NotFoundError(SkiffError):
    """A dataset, partition, model or version does not exist. Exit 2, HTTP 404."""

    http_status = 404


class ConflictError(SkiffError):
    """The write would overwrite something immutable (e.g. a model version). Exit 2, HTTP 409."""

    http_status = 409


class GateFailed(SkiffError):
    """A blocking gate said no (validation anomalies, a challenger that lost). Exit 1, HTTP 422."""

    exit_code = 1
    http_status = 422


class ValidationFailed(GateFailed):
    """TFDV found blocking anomalies or drift in a partition. Exit 1, HTTP 422."""


class StorageError(SkiffError):
    """The lake, artifact store or registry could not be read or written. Exit 2, HTTP 503."""

    http_status = 503


class EnvironmentMissing(SkiffError):
    """A step's own environment (e.g. the TFDV venv) is not installed. Exit 2, HTTP 503."""

    http_status = 503


class InvariantError(RuntimeError):
    """Rows read != written + quarantined + duplicates: a bug in skiff, never a user error (exit 3, HTTP 500).

    Deliberately not a :class:`SkiffError`: the faces treat it as an unexpected failure."""
