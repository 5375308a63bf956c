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
    EXPORT_OPTIONS,
    REGISTER_OPTIONS,
    from_args,
    register_settings,
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the export flags (every flag also reads ``EMS_EXPORT_<NAME>``; flags win)."""
    parser.epilog = (
        f"Every option can also be set as an environment variable {ENV_PREFIX}<OPTION> "
        f"(e.g. {ENV_PREFIX}QUANTIZE=none, {ENV_PREFIX}PER_TENSOR=1); command-line flags override them."
    )
    EXPORT_OPTIONS.add_arguments(parser)
    REGISTER_OPTIONS.add_arguments(parser.add_argument_group("MLflow registry"))
    parser.add_argument(
        "--quiet", "-q", action="store_true", default=False, help="no progress lines"
    )


def run(args: argparse.Namespace) -> int:
    """Run one export; print the quality table on stdout. Returns the exit code.

    MODEL may also be an MLflow model URI (``exporter/mlflow_source.py`` fetches it first), and
    ``--register NAME`` logs and registers the finished export (``exporter/register.py``).
    """
    from exasol_mlflow_server.exporter.report import format_table

    try:
        settings = from_args(args)
        reg = register_settings(args)  # flag combinations are checked before the long export
        from exasol_mlflow_server.exporter import mlflow_source, register
        from exasol_mlflow_server.exporter.pipeline import export_model

        source_model = str(settings.model)
        settings = mlflow_source.prepare(settings, reg.tracking_uri)
        result = export_model(settings, progress=not args.quiet)
        print(format_table(result.quality))
        print(f"MLflow model: {result.output}")
        registration = register.from_settings(reg, result.output, source=source_model)
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
