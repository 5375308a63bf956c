"""`exasol-mlflow-server serve`: parse flags + environment into Settings, resolve MODEL, serve.

`serve` also takes `mlflow models serve`'s spelling (`-m URI -h HOST -p PORT -w N -t SECONDS`;
help is `--help` only, as `-h` is the host), and accepts MLflow's flags that do not apply to this
server (they print a one-line note), so `mlflow models serve ...` command lines work unchanged.
"""

from __future__ import annotations

import argparse
import sys

from exasol_mlflow_server.settings import SettingsError

from .errors import ModelLoadError
from .settings import add_arguments, from_sources

DESCRIPTION = """Serve a model over MLflow's scoring protocol (POST /invocations).

MODEL is a directory written by `exasol-mlflow-server export`, or a Hugging Face model
directory / hub id (exported on first use: int8 on CPU, fp16 on CUDA; cached), or an MLflow
model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH). Every flag can also
be set by the environment variable named in its help; flags win. `-h` is the host (as in
`mlflow models serve`); help is `--help`."""

# `mlflow models serve` flags that have no meaning here: accepted, with a note. (flag, takes a value)
MLFLOW_ONLY_FLAGS: tuple[tuple[str, bool, str], ...] = (
    ("--env-manager", True, "the server runs in this Python environment"),
    ("--no-conda", False, "the server runs in this Python environment"),
    ("--install-mlflow", False, "MLflow is not needed to serve"),
    ("--enable-mlserver", False, "this server is the inference server"),
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--help", action="help", help="show this help message and exit")
    add_arguments(parser)
    group = parser.add_argument_group(
        "accepted for `mlflow models serve` compatibility (no effect)"
    )
    for flag, takes_value, _ in MLFLOW_ONLY_FLAGS:
        dest = "mlflow_" + flag.lstrip("-").replace("-", "_")
        if takes_value:
            group.add_argument(flag, dest=dest, default=None, metavar="VALUE")
        else:
            group.add_argument(flag, dest=dest, action="store_true", default=False)


def mlflow_only_notes(args: argparse.Namespace) -> list[str]:
    notes = []
    for flag, takes_value, why in MLFLOW_ONLY_FLAGS:
        value = getattr(args, "mlflow_" + flag.lstrip("-").replace("-", "_"), None)
        if value:
            shown = f"{flag} {value}" if takes_value else flag
            notes.append(f"note: {shown} is accepted for MLflow compatibility and ignored ({why})")
    return notes


def run(args: argparse.Namespace) -> int:
    from .resolve import resolve_model

    for note in mlflow_only_notes(args):
        print(note, file=sys.stderr)
    try:
        settings = from_sources(args)
        settings.bearer_token()  # a missing/empty token file is a start-up error
        specs = settings.model_specs()
        if not specs:
            raise ModelLoadError("no model given: pass MODEL (or --model, or set EMS_MODEL)")
        resolved = [(spec, resolve_model(settings, spec.source)) for spec in specs]
    except (ModelLoadError, SettingsError, ValueError, OSError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    try:
        if settings.workers > 1:  # (the supervisor imports the server itself, later)
            from .supervisor import run_workers

            return run_workers(settings, resolved)
        from .server import run_worker

        return run_worker(settings, resolved)
    except ModelLoadError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
