"""The real server as a subprocess on a free loopback port: the one harness of tests and
benchmarks (``exasol_mlflow_server.benchmarks.harness``), with the tests' spelling."""

from __future__ import annotations

import os
from pathlib import Path

from exasol_mlflow_server.benchmarks import harness
from exasol_mlflow_server.benchmarks.harness import free_port

__all__ = ["ServerProcess", "free_port"]


class ServerProcess(harness.ServerProcess):
    """``with ServerProcess(model_dir, "--threads", "1") as srv: srv.url``.

    ``seed_style``: the seed's command (no subcommand); ``mlflow_style``: `mlflow models serve`'s
    command line with our console script.
    """

    def __init__(
        self,
        model: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        seed_style: bool = False,
        mlflow_style: bool = False,
        ready_timeout: float = 120.0,
    ) -> None:
        port = free_port()
        style = "seed" if seed_style else "mlflow" if mlflow_style else "serve"
        super().__init__(
            harness.ours(model, port, *args, style=style),
            port,
            env={**os.environ, **(env or {})},
            ready_timeout=ready_timeout,
        )
