"""Regenerate the generated parts of README.md: the settings table and the benchmark summary.

The benchmark summary is cut from ``benchmarks/results/report.md`` (the committed run of
``python -m exasol_mlflow_server.benchmarks``): the run line, the targets and the throughput tables.
"""

from __future__ import annotations

import re
from pathlib import Path

from exasol_mlflow_server.runtime.settings import markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REPORT = ROOT / "benchmarks" / "results" / "report.md"


def _section(report: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", report, flags=re.S | re.M)
    return match.group(1).strip() if match else ""


def benchmark_summary() -> str:
    if not REPORT.is_file():
        return "No committed benchmark run yet: run the command above."
    report = REPORT.read_text()
    first = report.splitlines()[2] if len(report.splitlines()) > 2 else ""
    parts = [
        f"Latest run on this project's machine (2 vCPU AMD EPYC, AVX-512 VNNI; no GPU was available, "
        f"so the CUDA run was not done): {first}",
        "",
        "#### Targets",
        "",
        _section(report, "Targets"),
        "",
        "#### Throughput (rows/s)",
        "",
        _section(report, "Throughput (rows/s)"),
        "",
        "![rows/s vs batch size](benchmarks/results/throughput.png)",
        "![latency vs concurrency](benchmarks/results/latency.png)",
        "",
        "Full report, every cell with p50/p99 latency, errors, padding and compute efficiency, the "
        "stage profile and the MLflow-URI row: [benchmarks/results/report.md](benchmarks/results/report.md).",
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
