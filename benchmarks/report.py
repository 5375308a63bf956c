"""``results.json``, ``report.md`` and the PNG plots of one run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import plots, sections, tables, targets


def write_all(results: dict[str, Any], out: Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results["targets"] = targets.evaluate(results)
    (out / "results.json").write_text(
        json.dumps(results, indent=1, default=_json_default) + "\n", encoding="utf-8"
    )
    images = plots.write(results, out)
    (out / "report.md").write_text(render(results, [p.name for p in images]), encoding="utf-8")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def render(results: dict[str, Any], images: list[str]) -> str:
    opts, env = results["options"], results.get("environment", {})
    lines = [
        "# Benchmark report",
        "",
        f"`{results['command'].strip()}` — {env.get('date', '')}, "
        f"{'quick (CI) grid' if opts['quick'] else 'full grid'}, "
        f"total {tables.num(results['timings_s'].get('total'), 0)} s.",
        "",
        *_noise(results),
    ]
    lines += _machine(results) + sections.bf16(results) + _settings(results) + _targets(results)
    lines += tables.matrix(results) + sections.repeats(results) + sections.overload(results)
    lines += sections.peers(results) + sections.generation(results)
    lines += tables.cells(results) + _cold_start(results)
    lines += _quality(results) + tables.profile(results) + _registry(results) + _gpu(results)
    lines += _notes(results)
    if results.get("failures"):
        lines += ["## Failures", ""]
        lines += [f"- **{f['phase']}**: {f['error']}" for f in results["failures"]] + [""]
    lines += ["## Plots", ""] + [f"![{name}]({name})" for name in images] + [""]
    return "\n".join(lines)


def _noise(results: dict[str, Any]) -> list[str]:
    """How much CPU other processes took while this ran: the numbers are only as good as that."""
    load = results.get("foreign_load") or {}
    total = load.get("total")
    if not total:
        return []
    seconds = results.get("timings_s") or {}
    phases = ", ".join(  # a phase of under a second has no meaningful share
        f"{name} {v['share']:.0%}"
        for name, v in load.items()
        if name != "total" and v and seconds.get(name, 0) >= 1
    )
    line = (
        f"Other processes took {total['share']:.0%} of the machine's CPU during the run "
        f"({total['cpu_s']:.0f} CPU-s; by phase: {phases})."
    )
    if total["share"] > 0.05:
        line = (
            "**Warning: the machine was not quiet.** " + line + " Throughput and latency "
            "are understated where it was busy; rerun on a quiet machine before trusting them."
        )
    return [line, ""]


def _machine(results: dict[str, Any]) -> list[str]:
    env, peak = results.get("environment", {}), results.get("peak", {})
    cpu, pkgs = env.get("cpu", {}), env.get("packages", {})
    blas = (peak.get("blas") or [{}])[0]
    git = env.get("git", {})
    rows = [
        ["CPU", f"{cpu.get('model')} ({cpu.get('machine')}), {cpu.get('cores')} cores usable"],
        ["CPU flags", ", ".join(cpu.get("flags", [])) or "—"],
        ["memory", f"{env.get('memory_gib')} GiB"],
        ["OS / Python", f"{env.get('os')} / {env.get('python')}"],
        ["packages", ", ".join(f"{k} {v}" for k, v in pkgs.items())],
        ["ONNX Runtime providers", ", ".join(env.get("onnxruntime_providers", []))],
        ["git commit", f"`{git.get('commit')}`{' (dirty work tree)' if git.get('dirty') else ''}"],
        [
            "machine peak (measured)",
            f"{tables.num((peak.get('flops_per_s') or 0) / 1e9)} GFLOP/s float32 GEMM, numpy "
            f"{blas.get('internal_api')} {blas.get('version')} kernel `{blas.get('architecture')}`, "
            f"{peak.get('threads')} threads; best of sizes {list(peak.get('by_size', {}))}; "
            f"removed from its environment: {', '.join(peak.get('env_removed') or []) or 'nothing set'}",
        ],
    ]
    if results.get("peak_cuda"):
        pc = results["peak_cuda"]
        rows.append(
            [
                "GPU peak (measured)",
                f"{pc['device']}: fp16 {tables.num(pc['fp16_flops_per_s'] / 1e12)}"
                f" TFLOP/s, fp32 {tables.num(pc['fp32_flops_per_s'] / 1e12)} TFLOP/s (torch matmul)",
            ]
        )
    return ["## Machine", "", *tables.table(["", ""], rows), ""]


def _settings(results: dict[str, Any]) -> list[str]:
    opts, w = results["options"], results.get("workload", {})
    grid = opts["grid"]
    tok = w.get("tokens", {})
    exports = results.get("exports", {})
    lines = [
        "## Settings",
        "",
        f"- model: `{opts['model']}` ({w.get('model_shape')}), device `{opts['device']}`, "
        f"{opts['threads']} threads for every system (ORT intra-op, `torch.set_num_threads`, "
        "our server `--threads`)",
        f"- rows: {w.get('rows')} generated rows (seed {w.get('seed')}; {w.get('categories')}); "
        f"tokens per row mean {tok.get('mean')}, p50 {tok.get('p50')}, p90 {tok.get('p90')}, "
        f"p99 {tok.get('p99')}, max {tok.get('max')} (truncation {w.get('max_length')}); "
        f"{w.get('gflop_per_row_mean')} GFLOP per row on average",
        f"- grid: batch {list(grid['batches'])} x clients {list(grid['clients'])}; per cell up to "
        f"{grid['server']['max_rows']} rows (at least one request per client), clients start "
        f"no new request after {grid['server']['time_cap_s']} s; a cell whose single round "
        f"would exceed {grid['server']['max_cell_s']} s at the estimated rate is skipped",
        f"- in-process: up to {grid['inprocess']['max_rows']} rows or "
        f"{grid['inprocess']['time_cap_s']} s per cell",
        f"- MLflow (reduced grid, it is slow): batch {list(grid['mlflow_batches'])} x clients "
        f"{list(grid['mlflow_clients'])}, up to {grid['mlflow']['max_rows']} rows or "
        f"{grid['mlflow']['time_cap_s']} s per cell",
        f"- our server: `--backend` named per variant (never auto), `--result-cache-mb 0` "
        f"except in the cache-on cells; extra arguments: {opts['server_args'] or 'none'}",
    ]
    for precision, info in exports.items():
        lines.append(
            f"- export {precision}: optimization {info.get('optimization')}, quantization "
            f"{info.get('quantization')}, {info.get('model_bytes', 0) / 2**20:.1f} MiB, "
            f"exporter quality {info.get('exporter_quality')}"
        )
    return [*lines, ""]


def _targets(results: dict[str, Any]) -> list[str]:
    rows = [
        [
            t["name"],
            tables.num(t["measured"], 2) + ("x" if t["measured"] is not None else ""),
            f"{t['threshold']}x",
            targets.describe(t),
            t["detail"],
        ]
        for t in results["targets"]
    ]
    lines = [
        "## Targets",
        "",
        *tables.table(["target", "measured", "needed", "verdict", "detail"], rows),
        "",
    ]
    misses = [t for t in results["targets"] if t["met"] is False or t.get("not_applicable")]
    if misses:
        lines += [
            "What accounts for each miss (same run; the **Profile** section has the stages):",
            "",
        ]
        lines += [f"- {t['name']}: {t['explain'] or 'see Profile'}." for t in misses] + [""]
    return lines


def _cold_start(results: dict[str, Any]) -> list[str]:
    rows = [[name, tables.num(s, 2)] for name, s in results.get("cold_start_s", {}).items()]
    return [
        "## Cold start",
        "",
        "Seconds from starting the server process to the first 200 on `/ping` "
        "(our server answers 200 only after the model is loaded and warmed up).",
        "",
        *tables.table(["server", "seconds"], rows),
        "",
    ]


def _quality(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Quality",
        "",
        "Predictions of the servers for the same bench rows, compared to our fp32 server.",
        "",
    ]
    for name, q in results.get("quality", {}).items():
        lines.append(
            f"- {name.replace('_', ' ')}: "
            + ", ".join(
                f"{k} {tables.num(v, 4) if isinstance(v, float) else v}" for k, v in q.items()
            )
        )
    mlflow = results.get("mlflow", {})
    if mlflow.get("status") != "ok":
        lines.append(f"- MLflow: {mlflow.get('reason', 'not run')}")
    return [*lines, ""]


def _registry(results: dict[str, Any]) -> list[str]:
    if not results.get("registry"):
        return []
    from .registry import format_row

    return [
        "## Registry URI row",
        "",
        "Both servers behind the same `models:/` URI of a local MLflow tracking server "
        "(`--registry`, benchmarks/registry.py); one client.",
        "",
        "```",
        format_row(results["registry"]),
        "```",
        "",
    ]


def _gpu(results: dict[str, Any]) -> list[str]:
    opts, env = results["options"], results.get("environment", {})
    if opts["device"] == "cuda":
        text = (
            "Run with `--device cuda`: fp16 exports (O4) on the CUDA execution provider; all "
            "tables above except MLflow's are GPU numbers, and their efficiency is relative to "
            "the GPU matmul peak of the same precision (see Machine)."
        )
    else:
        from exasol_mlflow_server.runtime.session import cuda_available

        usable = cuda_available()
        text = (
            "Not run: "
            + (
                "a CUDA provider is usable here but `--device cuda` was not given."
                if usable
                else "no usable CUDA execution provider on this machine "
                f"(ONNX Runtime offers {', '.join(env.get('onnxruntime_providers', []))}"
                ", but no NVIDIA driver/GPU is present)."
            )
            + " On a GPU machine run `python -m exasol_mlflow_server.benchmarks --device cuda` "
            "(fp16 export + CUDA provider, torch on CUDA)."
        )
    return ["## GPU", "", text, "", *_gpu_run()]


def _gpu_run() -> list[str]:
    """The committed run of ``benchmarks.gpu`` (``results/gpu/``), where there is one."""
    path = Path(__file__).resolve().parent / "results" / "gpu" / "gpu.json"
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    lines = [
        f"Latest run of `python -m exasol_mlflow_server.benchmarks.gpu` on {run['gpu']} "
        f"({run.get('environment', {}).get('date', '')}; results/gpu/README.md):",
        "",
        "| model | cell | rows/s | first pass rows/s |",
        "|---|---|---|---|",
    ]
    for name, entry in run["models"].items():
        for cell in entry["in_process"]:
            if cell["system"] == "runtime":
                lines.append(f"| {name} | in process, batch {cell['batch']} | "
                             f"{cell['rows_per_s']:.0f} | {cell['cold_rows_per_s']:.0f} |")  # fmt: skip
        for cell in entry["served"]:
            if "rows_per_s" in cell:
                lines.append(f"| {name} | served, batch {cell['batch']} x {cell['clients']} | "
                             f"{cell['rows_per_s']:.0f} | |")  # fmt: skip
    return [*lines, "", *([run["note"], ""] if run.get("note") else [])]


def _notes(results: dict[str, Any]) -> list[str]:
    opts = results["options"]
    return [
        "## Notes",
        "",
        "- FLOPs per row = L·(8·S·H² + 4·S·H·I + 4·S²·H) = L·(24·S·H² + 4·S²·H) for I = 4H "
        "(performance reference §6), with S = the row's **own** token count after truncation. "
        "A client cannot see the padded batches a server ran, so all systems are credited with "
        "these *ideal* FLOPs; padding, tokenisation and HTTP show up as lower efficiency.",
        "- `in-process (runtime)`: `load_model(..., backend=...)` + `LoadedModel.run_batch` "
        "(collate, run, reduce) on rows tokenised before the clock, cut into the server's "
        "length-sorted micro-batches (the backend's token budget) per request of B rows (`all`: "
        "the whole cell sorted at once). `ORT plain session`: a default `InferenceSession` on "
        "the same micro-batches, "
        "collated before the clock. `PyTorch pipeline`: transformers AutoModel + tokenizer, "
        "each chunk of B rows padded to its longest row (no sorting), tokenisation timed.",
        "- Clients: each is one UDF instance with its own kept-alive HTTP/1.1 connection, "
        'posting `{"inputs": [B texts]}`; request bodies are built before the clock starts. '
        "Batch-1 cells use `wrk` (a C client with a Lua script cycling the prepared bodies; "
        "`apt-get install -y wrk`), the others a Python thread per client. Client and server "
        "share the machine's cores; each cell reports the client's CPU share."
        + (
            " **wrk was not installed: the batch-1 cells used the Python client.**"
            if not results.get("environment", {}).get("wrk")
            else ""
        ),
        "- MLflow: `mlflow models serve -m DIR --env-manager local` on the seeded "
        "`text-classification` MiniLM model saved with `mlflow.transformers.save_model`"
        + (
            " (our model here is feature-extraction: same encoder, different head)"
            if opts["model"] != "text-classification"
            else ""
        )
        + ". Install it with `pip install mlflow` (it is in the project's `[test]` extra).",
        "- Targets compare cells of this run only; none is asserted by the tests.",
        "",
    ]
