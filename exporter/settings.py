"""The one export settings object, built from CLI flags and ``EMS_EXPORT_*`` environment variables.

:class:`ExportSettings` declares the fields and their defaults; :data:`EXPORT_OPTIONS` their flags
and help (the mechanism is :mod:`exasol_mlflow_server.settings`, shared by every command). This
is the only module of the exporter that reads the environment. CLI flags override the
environment; the environment overrides the defaults. Settings are validated once, here, so every
later stage can trust them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter.errors import InvalidSettingError, UnknownTaskError
from exasol_mlflow_server.runtime.tasks import TASK_NAMES

from exasol_mlflow_server.settings import Option, OptionSet, SettingsError, parse_bool

ENV_PREFIX = "EMS_EXPORT_"
TASKS = TASK_NAMES  # the runtime's task registry is the one list of tasks
QUANTIZE_CHOICES = ("none", "int8", "fp16")
OPTIMIZE_CHOICES = ("O0", "O1", "O2", "O3", "O4")
PRESET_CHOICES = ("auto", "avx2", "avx512", "avx512_vnni", "arm64")


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
    per_tensor: bool = False  # per-tensor instead of per-channel INT8 weights
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
    def per_channel(self) -> bool:
        return not self.per_tensor

    @property
    def precision(self) -> str:
        return {"none": "fp32", "int8": "int8", "fp16": "fp16"}[self.quantize]


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidSettingError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")


EXPORT_OPTIONS = OptionSet(
    ExportSettings,
    ENV_PREFIX,
    (
        Option(
            "model",
            ("--model",),
            "local Hugging Face model directory, Hub id, or MLflow model URI (models:/NAME/VERSION, runs:/...)",
            positional=True,
            metavar="MODEL",
        ),
        Option("output", ("--output", "-o"), "output MLflow model directory", Path, metavar="DIR"),
        Option(
            "task",
            ("--task",),
            f"one of {', '.join(TASKS)} (default: inferred from the model)",
            metavar="TASK",
        ),
        Option(
            "quantize",
            ("--quantize",),
            "int8 (CPU), fp16 (CUDA graph) or none (fp32)",
            choices=QUANTIZE_CHOICES,
        ),
        Option(
            "optimize",
            ("--optimize",),
            "ONNX Runtime graph optimisation level (O4 = fp16)",
            choices=OPTIMIZE_CHOICES,
        ),
        Option(
            "max_length",
            ("--max-length",),
            "truncation length in tokens (default: the model's)",
            int,
            metavar="N",
        ),
        Option(
            "calibration",
            ("--calibration",),
            "validation texts: one per line, or JSON Lines with a 'text' field",
            Path,
            metavar="FILE",
        ),
        Option(
            "preset",
            ("--preset",),
            "INT8 kernel preset (none or auto: detected from the CPU)",
            choices=PRESET_CHOICES,
        ),
        Option(
            "per_tensor",
            ("--per-tensor",),
            "per-tensor instead of per-channel INT8 weights",
            parse_bool,
        ),
        Option("force", ("--force",), "replace a non-empty output directory", parse_bool),
        Option(
            "min_quality",
            ("--min-quality",),
            "fail (exit 3) if the primary quality metric is below X",
            float,
            metavar="X",
        ),
        Option(
            "opset",
            ("--opset",),
            "ONNX opset (none: optimum's choice for the architecture)",
            int,
        ),
        Option(
            "disk_factor",
            ("--disk-factor",),
            "free space needed at the output, as a multiple of the weights' size",
            float,
        ),
        Option(
            "batch_size",
            ("--batch-size",),
            "validation / speed-comparison batch size",
            int,
        ),
    ),
)


@dataclass(frozen=True)
class RegisterSettings:
    """``export ... --register NAME``: log and register the finished export in MLflow."""

    register: str | None = None
    alias: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None

    def __post_init__(self) -> None:
        if not self.register and (self.alias or self.experiment):
            raise InvalidSettingError("--alias and --experiment need --register NAME")


REGISTER_OPTIONS = OptionSet(
    RegisterSettings,
    ENV_PREFIX,
    (
        Option(
            "register",
            ("--register",),
            "log the export to MLflow and register it as a new version of NAME",
            metavar="NAME",
        ),
        Option("alias", ("--alias",), "with --register: point ALIAS at it", metavar="ALIAS"),
        Option(
            "tracking_uri",
            ("--tracking-uri",),
            "MLflow tracking server; also used for an MLflow MODEL URI",
            env=("MLFLOW_TRACKING_URI",),
            metavar="URI",
        ),
        Option(
            "experiment",
            ("--experiment",),
            "with --register: the experiment of the run (default: MLflow's)",
            metavar="NAME",
        ),
    ),
)


def register_settings(
    args: argparse.Namespace | None, environ: Mapping[str, str] | None = None
) -> RegisterSettings:
    try:
        return REGISTER_OPTIONS.build(args, environ)
    except SettingsError as exc:
        raise InvalidSettingError(str(exc)) from None


def from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Settings values given through ``EMS_EXPORT_*`` variables (only those that are set)."""
    try:
        return EXPORT_OPTIONS.values(None, environ)
    except SettingsError as exc:
        raise InvalidSettingError(str(exc)) from None


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ExportSettings:
    """Merge parsed CLI flags (None = not given) over the environment over the defaults."""
    try:
        return EXPORT_OPTIONS.build(args, environ)
    except SettingsError as exc:
        raise InvalidSettingError(str(exc)) from None
