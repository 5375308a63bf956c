"""The one export settings object, built from CLI flags and ``EMS_EXPORT_*`` environment variables.

This is the only module of the exporter that reads ``os.environ``. CLI flags override the
environment; the environment overrides the defaults below. Settings are validated once, here,
so every later stage can trust them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter.errors import InvalidSettingError, UnknownTaskError
from exasol_mlflow_server.runtime.tasks import TASK_NAMES

ENV_PREFIX = "EMS_EXPORT_"
TASKS = TASK_NAMES  # the runtime's task registry is the one list of tasks
QUANTIZE_CHOICES = ("none", "int8", "fp16")
OPTIMIZE_CHOICES = ("O0", "O1", "O2", "O3", "O4")
PRESET_CHOICES = ("auto", "avx2", "avx512", "avx512_vnni", "arm64")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class ExportSettings:
    """Everything one export needs. Construct directly (Python API) or via :func:`from_args`."""

    model: str
    output: Path
    task: str | None = None
    quantize: str = "int8"
    optimize: str = "O2"
    max_length: int | None = None
    calibration: Path | None = None
    preset: str | None = None  # None or "auto": detect from the CPU
    per_channel: bool = True
    force: bool = False
    min_quality: float | None = None
    opset: int | None = None
    disk_factor: float = 3.0  # free space needed at the output: disk_factor x weight size
    batch_size: int = 16  # validation / speed-comparison batch size

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", Path(self.output))
        if self.calibration is not None:
            object.__setattr__(self, "calibration", Path(self.calibration))
        if self.preset == "auto":
            object.__setattr__(self, "preset", None)
        if not str(self.model).strip():
            raise InvalidSettingError("MODEL is empty: give a local model directory or a Hub id")
        if (
            self.task is not None
            and self.task not in TASKS
            and not self.task.startswith("translation_")
        ):
            raise UnknownTaskError(f"unknown task {self.task!r}; choose one of: {', '.join(TASKS)}")
        _choice("--quantize", self.quantize, QUANTIZE_CHOICES)
        _choice("--optimize", self.optimize, OPTIMIZE_CHOICES)
        if self.preset is not None:
            _choice("--preset", self.preset, PRESET_CHOICES)
        if self.optimize == "O4" and self.quantize != "fp16":
            raise InvalidSettingError(
                "--optimize O4 means an fp16 graph for CUDA: use it with --quantize fp16"
            )
        if self.quantize == "fp16" and self.optimize == "O0":
            raise InvalidSettingError(
                "--quantize fp16 is produced by the graph optimizer: use --optimize O1..O4"
            )
        if self.max_length is not None and self.max_length < 2:
            raise InvalidSettingError(f"--max-length must be >= 2, got {self.max_length}")
        if self.min_quality is not None and not 0.0 <= self.min_quality <= 1.0:
            raise InvalidSettingError(
                f"--min-quality must be between 0 and 1, got {self.min_quality}"
            )
        if self.calibration is not None and not self.calibration.is_file():
            raise InvalidSettingError(f"--calibration file {self.calibration} does not exist")
        if self.disk_factor < 0:
            raise InvalidSettingError(f"disk factor must be >= 0, got {self.disk_factor}")
        if self.batch_size < 1:
            raise InvalidSettingError(f"batch size must be >= 1, got {self.batch_size}")

    @property
    def precision(self) -> str:
        return {"none": "fp32", "int8": "int8", "fp16": "fp16"}[self.quantize]


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidSettingError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise InvalidSettingError(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no)")


def _convert(name: str, raw: str, kind: type) -> Any:
    try:
        if kind is bool:
            return _parse_bool(name, raw)
        if kind is Path:
            return Path(raw)
        return kind(raw)
    except ValueError as exc:
        raise InvalidSettingError(f"{name}={raw!r} is not a valid {kind.__name__}") from exc


# field -> (environment variable suffix, type)
_ENV_FIELDS: dict[str, tuple[str, type]] = {
    "model": ("MODEL", str),
    "output": ("OUTPUT", Path),
    "task": ("TASK", str),
    "quantize": ("QUANTIZE", str),
    "optimize": ("OPTIMIZE", str),
    "max_length": ("MAX_LENGTH", int),
    "calibration": ("CALIBRATION", Path),
    "preset": ("PRESET", str),
    "force": ("FORCE", bool),
    "min_quality": ("MIN_QUALITY", float),
    "opset": ("OPSET", int),
    "disk_factor": ("DISK_FACTOR", float),
    "batch_size": ("BATCH_SIZE", int),
}


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings values given through ``EMS_EXPORT_*`` variables (only those that are set)."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field_name, (suffix, kind) in _ENV_FIELDS.items():
        raw = env.get(ENV_PREFIX + suffix)
        if raw is not None and raw != "":
            values[field_name] = _convert(ENV_PREFIX + suffix, raw, kind)
    raw = env.get(ENV_PREFIX + "PER_TENSOR")
    if raw:
        values["per_channel"] = not _parse_bool(ENV_PREFIX + "PER_TENSOR", raw)
    return values


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ExportSettings:
    """Merge parsed CLI flags (None = not given) over the environment over the defaults."""
    values = from_env(environ)
    names = {f.name for f in fields(ExportSettings)}
    for name in names:
        given = getattr(args, name, None)
        if given is not None:
            values[name] = given
    if getattr(args, "per_tensor", False):
        values["per_channel"] = False
    if getattr(args, "force", False):
        values["force"] = True
    if "model" not in values:
        raise InvalidSettingError(f"MODEL is required (argument or {ENV_PREFIX}MODEL)")
    if "output" not in values:
        raise InvalidSettingError(f"--output is required (or {ENV_PREFIX}OUTPUT)")
    return ExportSettings(**values)
