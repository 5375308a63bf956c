"""``exasol-mlflow-server export``: flags -> :class:`ExportSettings` -> :func:`export_model`.

Exit codes: 0 ok, 2 export error (``error: <message>`` on stderr, no traceback), 3 the model was
written but failed the ``--min-quality`` gate.
"""

from __future__ import annotations

import argparse
import sys

from exasol_mlflow_server.exporter.errors import ExportError, QualityGateError
from exasol_mlflow_server.exporter.settings import (
    ENV_PREFIX,
    OPTIMIZE_CHOICES,
    PRESET_CHOICES,
    QUANTIZE_CHOICES,
    TASKS,
    from_args,
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the export flags (every flag also reads ``EMS_EXPORT_<NAME>``; flags win)."""
    parser.epilog = (
        f"Every option can also be set as an environment variable {ENV_PREFIX}<OPTION> "
        f"(e.g. {ENV_PREFIX}QUANTIZE=none, {ENV_PREFIX}PER_TENSOR=1); command-line flags override them."
    )
    add = parser.add_argument
    add(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="local Hugging Face model directory, Hub id, or MLflow model URI (models:/NAME/VERSION, runs:/...)",
    )
    add(
        "--output",
        "-o",
        type=str,
        default=None,
        metavar="DIR",
        help="output MLflow model directory (required)",
    )
    add(
        "--task",
        default=None,
        metavar="TASK",
        help=f"one of {', '.join(TASKS)} (default: inferred from the model)",
    )
    add(
        "--quantize",
        default=None,
        choices=QUANTIZE_CHOICES,
        help="int8 (default, CPU), fp16 (CUDA graph) or none (fp32)",
    )
    add(
        "--optimize",
        default=None,
        choices=OPTIMIZE_CHOICES,
        help="ONNX Runtime graph optimisation level (default O2; O4 = fp16)",
    )
    add(
        "--max-length",
        dest="max_length",
        type=int,
        default=None,
        metavar="N",
        help="truncation length in tokens (default: the model's)",
    )
    add(
        "--calibration",
        default=None,
        metavar="FILE",
        help="validation texts: one per line, or JSON Lines with a 'text' field",
    )
    add(
        "--preset",
        default=None,
        choices=PRESET_CHOICES,
        help="INT8 kernel preset (default auto: detected from the CPU)",
    )
    add(
        "--per-tensor",
        dest="per_tensor",
        action="store_true",
        default=None,
        help="per-tensor instead of per-channel INT8 weights",
    )
    add(
        "--min-quality",
        dest="min_quality",
        type=float,
        default=None,
        metavar="X",
        help="fail (exit 3) if the primary quality metric is below X",
    )
    add(
        "--opset",
        type=int,
        default=None,
        help="ONNX opset (default: optimum's choice for the architecture)",
    )
    add("--force", action="store_true", default=None, help="replace a non-empty output directory")
    add("--quiet", "-q", action="store_true", default=False, help="no progress lines")
    from exasol_mlflow_server.exporter import register

    register.add_arguments(parser)  # --register, --alias, --tracking-uri, --experiment


def run(args: argparse.Namespace) -> int:
    """Run one export; print the quality table on stdout. Returns the exit code.

    MODEL may also be an MLflow model URI (``exporter/mlflow_source.py`` fetches it first), and
    ``--register NAME`` logs and registers the finished export (``exporter/register.py``).
    """
    from exasol_mlflow_server.exporter.report import format_table

    try:
        settings = from_args(args)
        from exasol_mlflow_server.exporter import mlflow_source, register
        from exasol_mlflow_server.exporter.pipeline import export_model

        source_model = str(settings.model)
        settings = mlflow_source.prepare(settings, args)
        result = export_model(settings, progress=not args.quiet)
        print(format_table(result.quality))
        print(f"MLflow model: {result.output}")
        registration = register.from_args(args, result.output, source=source_model)
        if registration is not None:
            print(registration.describe())
    except QualityGateError as exc:
        if exc.result is not None:
            print(format_table(exc.result.quality))  # type: ignore[attr-defined]
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0
