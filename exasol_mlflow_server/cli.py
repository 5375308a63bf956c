"""The `exasol-mlflow-server` command: `export`, `serve`, `udf`.

Each subcommand's parser and entry point live with the stage it drives; this module only
dispatches, importing lazily so that `serve` never imports the export stack (torch,
transformers, optimum).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from exasol_mlflow_server import __version__

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, help)
    "export": (
        "exasol_mlflow_server.exporter.cli",
        "convert a Hugging Face model into a quantized ONNX MLflow model",
    ),
    "serve": ("exasol_mlflow_server.runtime.cli", "serve a model over MLflow's scoring protocol"),
    "udf": ("exasol_mlflow_server.udf.cli", "print Exasol UDF scripts that call the server"),
}


def _load(
    name: str,
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]:
    import importlib

    module = importlib.import_module(SUBCOMMANDS[name][0])
    return module.configure_parser, module.run


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:2] == ["models", "serve"]:  # `mlflow models serve ...` with our binary
        args = ["serve", *args[2:]]
    # The seed's start command has no subcommand: `python -m exasol_mlflow_server --model X ...`.
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help", "--version", "-V"):
        args.insert(0, "serve")
    parser = argparse.ArgumentParser(
        prog="exasol-mlflow-server",
        description="Optimized ONNX Runtime serving of Hugging Face models for Exasol UDFs.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{export,serve,udf}")
    chosen = args[0] if args and args[0] in SUBCOMMANDS else None
    for name, (_, help_text) in SUBCOMMANDS.items():
        # `serve` keeps `-h` for the host (as `mlflow models serve` does); its help is --help
        sub_parser = sub.add_parser(
            name, help=help_text, description=help_text, add_help=name != "serve"
        )
        if name == chosen:  # only the chosen subcommand's module is imported
            configure, _ = _load(name)
            configure(sub_parser)
    ns = parser.parse_args(args)
    if ns.command is None:
        parser.print_help()
        return 2
    _, run = _load(ns.command)
    return int(run(ns) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
