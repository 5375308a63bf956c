"""`exasol-mlflow-server serve`: parse flags + environment into Settings, resolve MODEL, serve."""

from __future__ import annotations

import argparse
import sys

from .errors import ModelLoadError
from .settings import add_arguments, from_sources

DESCRIPTION = """Serve a model over MLflow's scoring protocol (POST /invocations).

MODEL is a directory written by `exasol-mlflow-server export`, or a Hugging Face model
directory / hub id (exported on first use: int8 on CPU, fp16 on CUDA; cached), or an MLflow
model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH). Every flag can also
be set by the environment variable named in its help; flags win."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .resolve import resolve_model
    from .server import run_worker, run_workers

    try:
        settings = from_sources(args)
        settings.bearer_token()  # a missing/empty token file is a start-up error
        model_dir = resolve_model(settings)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    try:
        if settings.workers > 1:
            return run_workers(settings, model_dir)
        return run_worker(settings, model_dir)
    except ModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
