"""``python -m exasol_mlflow_server.benchmarks [--quick] [--out DIR] [--skip-mlflow] [--model T]``."""

from __future__ import annotations

import os
import sys

from .config import parse


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    opts = parse(args)
    from .suite import run

    results = run(opts)
    return 1 if results.get("failures") else 0


if __name__ == "__main__":
    raise SystemExit(main())
