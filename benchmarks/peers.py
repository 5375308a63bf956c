"""infinity-emb, the second peer: its own venv, our exported graphs, its optimum (ONNX) engine.

infinity-emb pins libraries of its own (numpy < 2, its optimum), so it runs from a venv of its
own, built once under the bench cache (``<cache>/infinity-venv``: ``python -m venv`` + pip, the
same CPU torch as ours first so no CUDA build is pulled). It gets the same MiniLM
feature-extraction graphs that our server serves: its optimum engine prefers a file named
``*quantized*.onnx`` on CPU, so our int8 graph goes in as ``model_quantized.onnx`` (its best CPU
configuration) and our fp32 graph as ``model.onnx`` (its fp32 path). It is started from inside
the model directory with ``--model-id .`` (it mishandles absolute local paths), mean pooling
(MiniLM's; its ``auto`` would pick CLS for a directory without sentence-transformers files),
its default batch size (32), and its API is OpenAI-style ``POST /embeddings``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from exasol_mlflow_server.runtime.cache import build_once

from .client import Endpoint
from .harness import free_port

VERSION = "0.0.78"
REQUIREMENT = f"infinity-emb[server,optimum]=={VERSION}"
ENDPOINT = Endpoint(path="/embeddings", key="input", extra=(("model", "."),))
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ONNX_NAME = {"int8": "model_quantized.onnx", "fp32": "model.onnx"}
PYTHON = Path("bin") / "python"


def venv_dir(cache: Path) -> Path:
    """infinity-emb's venv (built once; a failed build raises with pip's output)."""

    def build(tmp: Path) -> Path:
        venv = tmp / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        pip = [str(venv / PYTHON), "-m", "pip", "install", "--quiet"]
        try:  # the same (CPU) torch as ours first, so that pip keeps it
            steps = [[f"torch=={importlib.metadata.version('torch')}"], [REQUIREMENT]]
        except importlib.metadata.PackageNotFoundError:
            steps = [[REQUIREMENT]]
        for args in steps:
            proc = subprocess.run([*pip, *args], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"pip install {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-2000:]}"
                )
        return venv

    def done(path: Path) -> bool:
        probe = [str(path / PYTHON), "-c", "import infinity_emb.cli"]
        return (path / PYTHON).exists() and subprocess.run(
            probe, capture_output=True
        ).returncode == 0

    return build_once(Path(cache) / "infinity-venv", done, build)


def model_dir(export_dir: Path, precision: str, cache: Path) -> Path:
    """A Hugging Face-style directory holding our exported graph under infinity's file name."""
    onnx = ONNX_NAME[precision]

    def build(tmp: Path) -> Path:
        out = tmp / "model"
        out.mkdir()
        for name in (*MODEL_FILES, "vocab.txt"):
            if (export_dir / name).is_file():
                shutil.copy2(export_dir / name, out / name)
        try:
            os.link(export_dir / "model.onnx", out / onnx)
        except OSError:
            shutil.copy2(export_dir / "model.onnx", out / onnx)
        return out

    return build_once(
        Path(cache) / "infinity-models" / precision, lambda p: (p / onnx).is_file(), build
    )


def command(venv: Path, port: int, threads: int) -> tuple[list[str], dict[str, str]]:
    """infinity-emb's server command line (run it in the model directory) and its environment."""
    cmd = [str(venv / PYTHON), "-c", "from infinity_emb.cli import cli; cli()", "v2"]
    cmd += ["--model-id", ".", "--engine", "optimum", "--device", "cpu"]
    cmd += ["--pooling-method", "mean", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--url-prefix", "", "--log-level", "warning"]
    env = {
        "OMP_NUM_THREADS": str(threads),
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
    }
    return cmd, env


def server(venv: Path, model: Path, log_dir: Path, threads: int, name: str) -> Any:
    """infinity-emb on ``model`` as a benchmarked server; its optimised-graph cache stays in the
    model directory, so the fp32 and int8 directories never share one."""
    from .servers import Server

    port = free_port()
    cmd, env = command(venv, port, threads)
    env["HF_HOME"] = str(Path(model) / ".hf")
    return Server(name, cmd, port, log_dir, env=env, cwd=Path(model), ready_path="/health",
                  stop_group=True)  # fmt: skip


def run_peers(bench: Any) -> None:
    """Ours (every variant) and infinity-emb (int8 and fp32) on MiniLM embeddings, all servers up
    at once and the cells interleaved (A, B, A, B ...) so that machine noise hits all alike."""
    from . import cells, client, servers
    from .quality import compare
    from .rows import generate_rows
    from .workload import Workload

    opts, budget = bench.opts, bench.grid.peers
    task = "feature-extraction"
    exports = {p: servers.exported_dir(task, p, opts.cache) for p in ("fp32", "int8")}
    w = Workload.build(generate_rows(bench.grid.pool_rows, opts.seed), exports["fp32"])
    logs = opts.cache / "logs"
    entries: list[tuple[str, str, str | None, Any, Endpoint]] = []  # system, precision, backend
    for v in bench.variants:
        srv = servers.Server.ours(
            exports[v.export], logs, bench.threads, opts.device, opts.server_args,
            name=f"ours-embed-{v.name}", backend=v.backend,
        )  # fmt: skip
        entries.append(("server", v.precision, v.backend, srv, client.INVOCATIONS))
    info: dict[str, Any] = {"status": "ok", "version": VERSION, "model": task}
    try:
        venv = venv_dir(opts.cache)
        for precision in ("int8", "fp32"):
            mdir = model_dir(exports[precision], precision, opts.cache)
            srv = server(venv, mdir, logs, bench.threads, f"infinity-{precision}")
            entries.append(("infinity", precision, None, srv, ENDPOINT))
    except Exception as exc:  # no venv: ours still run, infinity is skipped with the reason
        info = {"status": "skipped", "reason": f"infinity-emb venv: {type(exc).__name__}: {exc}"}
    preds: dict[str, list[Any]] = {}
    with contextlib.ExitStack() as stack:
        for _, _, _, srv, endpoint in entries:
            stack.enter_context(srv)
            bench.results["cold_start_s"][f"embeddings {srv.name}"] = srv.cold_start_s
            texts = w.texts[: bench.grid.quality_rows]
            preds[srv.name] = client.collect_predictions(srv.port, texts, endpoint=endpoint)
        for batch, n_clients in bench.grid.peer_cells:
            for system, precision, backend, srv, endpoint in entries:
                rows = max(budget.max_rows, batch * n_clients)
                requests = client.build_requests(w, rows, batch, endpoint=endpoint)
                stats = cells.measure(
                    srv.port, w, requests, n_clients, budget.time_cap_s, srv.pid, endpoint
                )
                bench.add_cell(
                    system, precision, batch, n_clients, stats, "", backend,
                    scenario="embeddings", server=srv.name,
                )  # fmt: skip
    ref = entries[0][3].name
    info["quality_vs_ours_fp32"] = {
        name: compare(task, preds[ref], p) for name, p in preds.items() if name != ref
    }
    bench.results["infinity"] = info


__all__ = ["ENDPOINT", "VERSION", "command", "model_dir", "run_peers", "server", "venv_dir"]
