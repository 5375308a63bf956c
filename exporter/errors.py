"""Typed export errors: every failure the user can fix has its own class and a clear message.

The CLI prints ``error: <message>`` and exits with :attr:`ExportError.exit_code` (2); nothing
here carries a traceback to the user. Unexpected exceptions are not wrapped: they are bugs.
"""

from __future__ import annotations


class ExportError(Exception):
    """Base class for export failures caused by the input, the environment or the settings."""

    exit_code: int = 2


class InvalidSettingError(ExportError):
    """A flag or environment variable has an invalid value or an invalid combination."""


class UnknownTaskError(ExportError):
    """The task is not one we export, or it cannot be inferred from the model."""


class ModelNotFoundError(ExportError):
    """The model is neither an existing local directory nor a plausible Hugging Face Hub id."""


class InvalidModelError(ExportError):
    """The model directory is incomplete or corrupt (no config.json, unreadable weights, ...)."""


class HubUnreachableError(ExportError):
    """A Hub id was given but the Hugging Face Hub cannot be reached (offline, no network)."""


class UnsupportedArchitectureError(ExportError):
    """optimum-onnx cannot export this architecture (or not for this task)."""


class TokenizerError(ExportError):
    """The model has no fast tokenizer (tokenizer.json) and none could be created."""


class OutputExistsError(ExportError):
    """The output directory exists and is not empty (use --force to replace it)."""


class InsufficientDiskError(ExportError):
    """Not enough free disk space at the output location for the export's working files."""


class ConversionError(ExportError):
    """A conversion stage (ONNX export, optimisation, quantisation) failed for this model."""


class QualityGateError(ExportError):
    """The exported model's primary quality metric is below ``--min-quality``.

    The output directory is kept (with ``quality.json`` saying ``"passed": false``) so the
    user can inspect it; a re-export into it needs ``--force``.
    """

    exit_code = 3

    def __init__(self, message: str, result: object = None) -> None:
        super().__init__(message)
        self.result = result  # the ExportResult that was written
