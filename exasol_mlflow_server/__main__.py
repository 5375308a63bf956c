"""`python -m exasol_mlflow_server ...` (same as the `exasol-mlflow-server` console script)."""

from exasol_mlflow_server.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
