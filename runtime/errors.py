"""Typed serving errors. No HTTP here: ``runtime/http/errors.py`` maps each type to a status.

``error_code`` values are MLflow's (``mlflow/exceptions.py``), so clients that read them keep working.
"""

from __future__ import annotations


class ServingError(Exception):
    """Base class; ``message`` is safe to return to the client."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    """Malformed body, wrong shape, missing column, non-string input, empty input."""

    error_code = "BAD_REQUEST"


class InvalidParameter(BadRequest):
    """A ``params`` entry is unknown-typed or out of range."""

    error_code = "INVALID_PARAMETER_VALUE"


class UnknownModel(ServingError):
    """No model (or no model version) of that name is served here."""

    error_code = "RESOURCE_DOES_NOT_EXIST"


class UnsupportedMediaType(ServingError):
    error_code = "BAD_REQUEST"


class PayloadTooLarge(ServingError):
    error_code = "BAD_REQUEST"


class Unauthenticated(ServingError):
    error_code = "UNAUTHENTICATED"


class NotReady(ServingError):
    """The model is still loading or warming up."""

    error_code = "TEMPORARILY_UNAVAILABLE"


class ShuttingDown(NotReady):
    """The server is draining (SIGTERM) or the model is being retired; retry elsewhere."""


class Overloaded(ServingError):
    """The batch queue is full; retry after ``retry_after`` seconds."""

    error_code = "TEMPORARILY_UNAVAILABLE"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeadlineExceeded(ServingError):
    error_code = "DEADLINE_EXCEEDED"


class ModelFailure(ServingError):
    """Inference itself failed (a server-side fault, not the client's)."""

    error_code = "INTERNAL_ERROR"


class ModelLoadError(ServingError):
    """The model directory cannot be loaded (missing files, bad manifest, unusable provider)."""

    error_code = "INTERNAL_ERROR"
