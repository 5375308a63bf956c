"""The GPU benchmark: our runtime with ``--device cuda`` on exported models, at the batch sizes UDFs
send, against plain ONNX Runtime on the same GPU, graph and micro-batches, in process and served.

    python -m exasol_mlflow_server.benchmarks.gpu --model EXPORT_DIR [--model ...] --out DIR

For each export: in process, our runtime (collate, IO binding, pooling) and a bare
``InferenceSession`` on the CUDA provider at batch 1, 10, 100 and 1000 rows; served, ``serve
--device cuda`` driven over real HTTP by the suite's client at batch 100 x 1, 4 and 16 clients and
batch 1 x 16 clients. Writes ``gpu.json`` and ``gpu.md`` (the GPU, the CPU and every ratio
measured in this one run). The full suite (``--device cuda``) needs the export toolchain on the GPU
machine; this one needs only exports made anywhere.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from . import client, inprocess, machine, servers
from .rows import generate_rows
from .workload import Budget, Workload

BATCHES = (1, 10, 100, 1000)
SERVED = ((100, 1), (100, 4), (100, 16), (1, 16))


def gpu_name() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.strip() or out.stderr.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"nvidia-smi failed: {exc}"


def in_process(
    model_dir: Path, workload: Workload, seconds: float, device: str
) -> list[dict[str, Any]]:
    budget = Budget(max_rows=4000, time_cap_s=seconds, max_cell_s=seconds * 4)
    cells = []
    for make in (inprocess.runtime_system, inprocess.plain_ort_system):
        system = make(model_dir, workload, 1, device)
        try:
            for batch in BATCHES:
                cold = inprocess.run_cell(system, workload, batch, budget.max_rows, budget)
                stats = inprocess.run_cell(system, workload, batch, budget.max_rows, budget)
                stats["cold_rows_per_s"] = cold["rows_per_s"]  # first sight of each shape
                cells.append({"system": system.name, "precision": system.precision,
                              "batch": batch, **stats})  # fmt: skip
                print(f"  {system.name:10s} batch {batch:5d}: {stats['rows_per_s']:9.1f} rows/s",
                      flush=True)  # fmt: skip
        finally:
            system.close()
    return cells


def served(
    model_dir: Path, workload: Workload, log_dir: Path, seconds: float, device: str
) -> list[dict]:
    cells = []
    with servers.Server.ours(model_dir, log_dir, 1, device, name=f"ours-{device}") as srv:
        warm = client.build_requests(workload, 3200, 100)  # every shape seen once, untimed
        client.run_load(srv.port, client.split_clients(warm, 16), seconds)
        for batch, clients in SERVED:
            requests = client.build_requests(workload, max(batch * clients * 40, 400), batch)
            result = client.run_load(srv.port, client.split_clients(requests, clients), seconds)
            stats = result.stats(workload)
            cells.append({"system": "server", "batch": batch, "clients": clients, **stats})
            print(f"  server batch {batch:4d} x {clients:2d}: {stats['rows_per_s']:9.1f} rows/s "
                  f"p50 {stats.get('p50_ms', 0):.1f} ms", flush=True)  # fmt: skip
        cells.append({"system": "server", "cold_start_s": srv.cold_start_s})
    return cells


def cuda_placement(model_file: Path) -> str:
    """Does every node run on the CUDA provider? (ORT refuses the session where one cannot.)"""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        ort.InferenceSession(str(model_file), options, providers=["CUDAExecutionProvider"])
        return "every node on CUDA"
    except Exception as exc:  # onnxruntime raises its own exception types
        return f"some nodes need the CPU provider: {str(exc)[:400]}"


def report(results: dict[str, Any]) -> str:
    lines = [
        "# GPU benchmark",
        "",
        f"GPU: {results['gpu']}; CPU: {results['cpu']}; onnxruntime {results['onnxruntime']}.",
        "",
    ]
    for name, entry in results["models"].items():
        lines += [f"## {name} ({entry['precision']})", "", f"Placement: {entry['placement']}.", "", "| cell | rows/s | first pass rows/s | p50 ms | vs plain ORT |",
                  "|---|---|---|---|---|"]  # fmt: skip
        plain = {
            c["batch"]: c["rows_per_s"] for c in entry["in_process"] if c["system"] == "ort-plain"
        }
        for c in entry["in_process"]:
            ratio = c["rows_per_s"] / plain[c["batch"]] if c["system"] == "runtime" else None
            lines.append(f"| in process {c['system']} batch {c['batch']} | {c['rows_per_s']:.0f} | "
                         f"{c['cold_rows_per_s']:.0f} | "
                         f"{c['p50_ms']:.1f} | {f'{ratio:.2f}x' if ratio else ''} |")  # fmt: skip
        for c in entry["served"]:
            if "rows_per_s" in c:
                lines.append(f"| served batch {c['batch']} x {c['clients']} clients | "
                             f"{c['rows_per_s']:.0f} | | {c.get('p50_ms', 0):.1f} | |")  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exasol_mlflow_server.benchmarks.gpu")
    parser.add_argument("--model", type=Path, action="append", required=True, help="export dir")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=8.0, help="time cap per cell")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run")
    ns = parser.parse_args(argv)
    import onnxruntime as ort

    ns.out.mkdir(parents=True, exist_ok=True)
    env = machine.environment()
    results: dict[str, Any] = {
        "gpu": gpu_name() if ns.device == "cuda" else "none (--device cpu)",
        "device": ns.device,
        "cpu": env.get("cpu"),
        "onnxruntime": ort.__version__,
        "environment": env,
        "models": {},
        "note": "",  # what a reader of this run must know (set by hand where needed)
    }
    rows = generate_rows(2000)
    for model_dir in ns.model:
        manifest = json.loads((model_dir / "exasol_model.json").read_text(encoding="utf-8"))
        name = f"{manifest['task']}-{manifest.get('precision')}"
        print(f"== {name}: {model_dir}", flush=True)
        workload = Workload.build(rows, model_dir)
        start = time.perf_counter()
        entry = {
            "precision": manifest.get("precision"),
            "placement": cuda_placement(model_dir / manifest["model_file"])
            if ns.device == "cuda"
            else "cpu run",
            "in_process": in_process(model_dir, workload, ns.seconds, ns.device),
            "served": served(model_dir, workload, ns.out / "logs", ns.seconds, ns.device),
        }
        entry["seconds"] = round(time.perf_counter() - start, 1)
        results["models"][name] = entry
    (ns.out / "gpu.json").write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    (ns.out / "gpu.md").write_text(report(results), encoding="utf-8")
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
