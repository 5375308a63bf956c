"""`exasol-mlflow-server udf MODEL_DIR --schema S ...`: print the SQL that calls the server."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exasol_mlflow_server.settings import SettingsError

from .generator import generate_sql
from .model_info import UdfError, read_model_info
from .settings import UDF_OPTIONS, UdfOptions


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Print ready-to-run SQL for Exasol: a CONNECTION holding the server URL(s) and token, a "
        "batching SET script, a SCALAR script, grants and example queries. See docs/exasol.md."
    )
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="exported model directory")
    parser.add_argument("--output", "-o", default=None, help="write the SQL here, not to stdout")
    UDF_OPTIONS.add_arguments(parser)


def options_from(args: argparse.Namespace) -> UdfOptions:
    try:
        return UDF_OPTIONS.build(args)
    except SettingsError as exc:
        raise UdfError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    try:
        sql = generate_sql(read_model_info(args.model_dir), options_from(args))
        if args.output:
            Path(args.output).write_text(sql, encoding="utf-8")
        else:
            sys.stdout.write(sql)
    except (UdfError, OSError) as exc:
        print(f"exasol-mlflow-server udf: error: {exc}", file=sys.stderr)
        return 2
    return 0
