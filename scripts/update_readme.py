"""Regenerate the generated parts of README.md: the settings table and the benchmark summary.

The benchmark summary is cut from ``benchmarks/results/report.md`` (the committed run of
``python -m exasol_mlflow_server.benchmarks``): the run line, the targets and the throughput tables.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from exasol_mlflow_server.runtime.settings import markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REPORT = ROOT / "benchmarks" / "results" / "report.md"
RESULTS = ROOT / "benchmarks" / "results" / "results.json"


def _section(report: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, flags=re.S | re.M)
    return match.group(1).strip() if match else ""


def machine_line() -> str:
    """The CPU of the committed run, as its results.json recorded it."""
    try:
        results = json.loads(RESULTS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "this project's machine"
    cpu = results.get("environment", {}).get("cpu", {})
    bf16 = results.get("native_bf16") or {}
    flags = ", ".join(f for f in cpu.get("flags", []) if "512" in f or "amx" in f) or "no AVX-512"
    kind = (
        "AMX-BF16"
        if bf16.get("amx")
        else "AVX512-BF16, no AMX"
        if bf16.get("native")
        else "no bf16"
    )
    gpu = "a GPU" if results.get("options", {}).get("device") == "cuda" else "no GPU"
    return f"{cpu.get('cores')} vCPU {cpu.get('model')} ({flags}; {kind}; {gpu})"


def benchmark_summary() -> str:
    if not REPORT.is_file():
        return "No committed benchmark run yet: run the command above."
    report = REPORT.read_text()
    first = report.splitlines()[2] if len(report.splitlines()) > 2 else ""
    parts = [
        f"Latest run, on {machine_line()}: {first}",
        "",
        "#### Targets",
        "",
        _section(report, "Targets"),
        "",
        "#### Throughput (rows/s)",
        "",
        _section(report, "Throughput (rows/s)"),
        "",
        *[
            part
            for title in ("Repeated columns", "Overload", "Embeddings peer: infinity-emb")
            if (body := _section(report, title))
            for part in (f"#### {title}", "", body, "")
        ],
        "![rows/s vs batch size](benchmarks/results/throughput.png)",
        "![latency vs concurrency](benchmarks/results/latency.png)",
        "",
        "Full report, every cell with p50/p99 latency, errors, client and server CPU, padding and "
        "compute efficiency, the generation cell, the stage profile and the MLflow-URI row: "
        "[benchmarks/results/report.md](benchmarks/results/report.md).",
    ]
    return "\n".join(parts)


def render(text: str) -> str:
    def fill(marker: str, body: str, source: str) -> str:
        return re.sub(
            rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)",
            lambda m: m.group(1) + body + "\n" + m.group(2),
            source,
            flags=re.S,
        )

    text = fill("settings-table", markdown_table(), text)
    return fill("benchmarks", benchmark_summary(), text)


if __name__ == "__main__":
    README.write_text(render(README.read_text()))
