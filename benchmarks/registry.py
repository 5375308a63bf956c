"""Benchmark row: the same registered transformers-flavor model URI behind both servers.

A real MLflow tracking server (SQLite backend, local artifact store, loopback port) gets the
seeded text classifier logged with MLflow's ``transformers`` flavor and registered as
``bench-clf`` with the alias ``champion``. Then ``mlflow models serve -m models:/bench-clf@champion``
and our ``serve models:/bench-clf@champion`` are measured on the UDF batch sizes (rows/s, one
client = one UDF instance), plus our cold start (seconds from process start to the first 200 on
``/ping``) with an empty cache (download + ONNX export + load) and with a warm one, next to
MLflow's own cold start.

``python -m exasol_mlflow_server.benchmarks.registry [--quick] [--out DIR]`` writes
``registry.json``; :func:`run_registry_benchmark` is what the suite calls.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .harness import ServerProcess, free_port, offline_env
from .paths import default_out

MODEL_NAME = "bench-clf"
ALIAS = "champion"
URI = f"models:/{MODEL_NAME}@{ALIAS}"


class TrackingServer(ServerProcess):
    """``mlflow server`` with a SQLite store and a local artifact root in ``root``."""

    def __init__(self, root: Path, port: int | None = None, ready_timeout: float = 240.0) -> None:
        self.root = Path(root)
        port = port or free_port()
        cmd = [sys.executable, "-m", "mlflow", "server"]
        cmd += ["--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
        cmd += ["--artifacts-destination", str(self.root / "artifacts")]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        env = offline_env({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job runners
        super().__init__(
            cmd,
            port,
            name="mlflow-tracking",
            log_path=self.root / "mlflow-server.log",
            env=env,
            ready_path="/health",
            ready_timeout=ready_timeout,
            stop_group=True,  # its own session: uvicorn and its workers
        )


def log_transformers_model(
    tracking_uri: str,
    model_dir: Path,
    task: str,
    name: str,
    alias: str | None = None,
    id2label: dict[int, str] | None = None,
    experiment: str = "models",
) -> tuple[str, str]:
    """Log an HF directory with MLflow's transformers flavor and register it.

    Runs in this process (it imports torch and transformers). Returns (run id, version).
    """
    import mlflow
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    if task == "feature-extraction":
        model = AutoModel.from_pretrained(model_dir)
    elif task.startswith(("translation", "summarization", "text2text-generation")):
        model = AutoModelForSeq2SeqLM.from_pretrained(model_dir)
    elif task == "text-generation":
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    else:
        kwargs: dict[str, Any] = {}
        if id2label:
            kwargs = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with mlflow.start_run() as run:
        info = mlflow.transformers.log_model(
            transformers_model={"model": model, "tokenizer": tokenizer},
            name="model",
            task=task,
            registered_model_name=name,
            pip_requirements=["transformers", "torch"],  # no torchvision probing
        )
    version = str(info.registered_model_version)
    if alias:
        mlflow.MlflowClient().set_registered_model_alias(name, alias, version)
    return run.info.run_id, version


def srv_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _throughput(port: int, texts: list[str], batch: int, rows: int, cap_s: float) -> dict:
    """rows/s of one client (one UDF instance) sending ``batch`` rows per request."""
    import orjson

    from .client import Request, run_load

    requests = [
        Request(
            orjson.dumps({"inputs": [texts[(s + k) % len(texts)] for k in range(batch)]}),
            list(range(batch)),
        )
        for s in range(0, max(rows, batch), batch)
    ]
    run_load(port, [requests[:1]], time_cap_s=cap_s)  # warm up the connection and the model
    result = run_load(port, [requests], time_cap_s=cap_s)
    done = len(result.ok_rows)
    return {
        "batch": batch,
        "rows": done,
        "seconds": round(result.wall_s, 3),
        "rows_per_s": round(done / max(result.wall_s, 1e-9), 2),
        "errors": result.errors,
    }


def run_registry_benchmark(out_dir: Path, quick: bool = False, threads: int = 0) -> dict:
    """Measure both servers on the same registered URI; write ``registry.json`` into ``out_dir``."""
    from exasol_mlflow_server import fixtures

    from .rows import texts as make_texts
    from .servers import Server, free_port

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = threads or max(1, os.cpu_count() or 1)
    batches = (1, 100) if quick else (1, 10, 100, 1000)
    rows, cap = (200, 5.0) if quick else (2000, 20.0)
    texts = make_texts(400 if quick else 2000)
    work = Path(tempfile.mkdtemp(prefix="ems-registry-bench-"))
    result: dict[str, Any] = {"uri": URI, "threads": threads, "batches": list(batches)}
    try:
        with TrackingServer(work / "tracking") as tracking:
            _, version = log_transformers_model(
                tracking.url,
                fixtures.task_model_dir("text-classification"),
                "text-classification",
                MODEL_NAME,
                ALIAS,
            )
            result["model_version"] = version
            env = {"MLFLOW_TRACKING_URI": tracking.url, "EMS_CACHE_DIR": str(work / "cache")}
            ours_cmd = [
                sys.executable, "-m", "exasol_mlflow_server", "serve", URI, "--host", "127.0.0.1",
                "--threads", str(threads), "--reload-interval", "0", "--request-timeout", "600",
                "--result-cache-mb", "0",
                "--port",
            ]  # fmt: skip
            cold: dict[str, float | None] = {}
            for label in ("empty_cache", "warm_cache"):
                port = free_port()
                srv = Server(f"ours-{label}", [*ours_cmd, str(port)], port, out_dir, env=env)
                with srv:
                    cold[label] = srv.cold_start_s
                    if label == "warm_cache":
                        with urllib.request.urlopen(f"{srv_url(port)}/metadata", timeout=10) as r:
                            meta = json.loads(r.read())
                        result["ours_precision"] = meta.get("precision")
                        result["ours"] = [_throughput(port, texts, b, rows, cap) for b in batches]
            result["ours_cold_start_s"] = cold
            port = free_port()
            mlflow_cmd = [
                sys.executable, "-m", "mlflow", "models", "serve", "-m", URI, "--env-manager",
                "local", "-h", "127.0.0.1", "-p", str(port),
            ]  # fmt: skip
            mlflow_env = {
                **env,
                "OMP_NUM_THREADS": str(threads),
                "MKL_NUM_THREADS": str(threads),
                "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "600",  # its default 60 s cuts big batches
            }
            with Server("mlflow", mlflow_cmd, port, out_dir, env=mlflow_env) as srv:
                result["mlflow_cold_start_s"] = srv.cold_start_s
                result["mlflow"] = [  # as in the suite's grid: MLflow gets batches up to 100
                    _throughput(port, texts, b, rows, cap) for b in batches if b <= 100
                ]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ours = {r["batch"]: r["rows_per_s"] for r in result.get("ours", [])}
    theirs = {r["batch"]: r["rows_per_s"] for r in result.get("mlflow", [])}
    result["speedup"] = {
        str(b): round(ours[b] / theirs[b], 2) for b in theirs if b in ours and theirs[b] > 0
    }
    (out_dir / "registry.json").write_text(json.dumps(result, indent=2))
    return result


def format_row(result: dict) -> str:
    lines = [
        f"same URI {result['uri']} (version {result.get('model_version')}; ours "
        f"{result.get('ours_precision')} ONNX, MLflow PyTorch fp32; {result['threads']} thread(s)):"
    ]
    theirs = {r["batch"]: r["rows_per_s"] for r in result.get("mlflow", [])}
    for r in result.get("ours", []):
        b = r["batch"]
        other = theirs.get(b)
        extra = (
            f"  mlflow models serve {other:9.1f} rows/s  x{r['rows_per_s'] / other:.1f}"
            if other
            else ""
        )
        lines.append(f"  batch {b:5d}: ours {r['rows_per_s']:9.1f} rows/s{extra}")
    cold = result.get("ours_cold_start_s") or {}
    lines.append(
        f"  cold start to /ping 200: ours {cold.get('empty_cache') or 0:.1f}s empty cache, "
        f"{cold.get('warm_cache') or 0:.1f}s warm; mlflow {result.get('mlflow_cold_start_s') or 0:.1f}s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exasol_mlflow_server.benchmarks.registry",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="batch 1 and 100, fewer rows")
    parser.add_argument("--out", type=Path, default=default_out())
    parser.add_argument("--threads", type=int, default=0, help="threads per server (0 = all cores)")
    args = parser.parse_args(argv)
    result = run_registry_benchmark(args.out, quick=args.quick, threads=args.threads)
    print(format_row(result))
    print(f"written: {args.out / 'registry.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
