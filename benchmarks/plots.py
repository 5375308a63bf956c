"""PNG plots of a results dict (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

LABELS = {
    "ort-runtime": "ORT in-process (runtime)",
    "ort-plain": "ORT plain session",
    "torch": "PyTorch pipeline",
    "server": "our server",
    "mlflow": "mlflow models serve",
}


def label(system: str, precision: str) -> str:
    return f"{LABELS.get(system, system)} {precision}"


def _ok(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in cells if c["status"] == "ok" and isinstance(c["batch"], int)]


def throughput(results: dict[str, Any], path: Path) -> Path:
    """rows/s vs UDF batch size (log x): one panel per client count; in-process lines in each."""
    cells = _ok(results["cells"])
    clients = sorted({c["clients"] for c in cells if c["clients"] is not None}) or [1]
    fig, axes = plt.subplots(
        1, len(clients), figsize=(5.5 * len(clients), 4.5), squeeze=False, sharey=True
    )
    systems = sorted({(c["system"], c["precision"]) for c in cells})
    for ax, n in zip(axes[0], clients, strict=True):
        for system, precision in systems:
            inproc = all(c["clients"] is None for c in cells if c["system"] == system)
            pts = sorted(
                (c["batch"], c["rows_per_s"])
                for c in cells
                if c["system"] == system
                and c["precision"] == precision
                and (c["clients"] == n or inproc)
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "--" if inproc else "-", marker="o", label=label(system, precision))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{n} concurrent client{'s' if n > 1 else ''} (dashed: in-process)")
        ax.set_xlabel("rows per request (UDF batch size)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("rows/s")
    axes[0][-1].legend(fontsize=8, loc="best")
    fig.suptitle(
        f"Throughput, {results['options']['model']} ({results['environment']['cpu']['model']}, "
        f"{results['options']['threads']} threads)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(results: dict[str, Any], path: Path) -> Path:
    """p50 (solid) and p99 (dashed) request latency vs concurrent clients, one panel per batch."""
    cells = [c for c in _ok(results["cells"]) if c["clients"] is not None]
    batches = sorted({c["batch"] for c in cells}) or [1]
    fig, axes = plt.subplots(1, len(batches), figsize=(4.5 * len(batches), 4.2), squeeze=False)
    systems = sorted({(c["system"], c["precision"]) for c in cells})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, batch in zip(axes[0], batches, strict=True):
        for i, (system, precision) in enumerate(systems):
            pts = sorted(
                (c["clients"], c["p50_ms"], c["p99_ms"])
                for c in cells
                if c["system"] == system and c["precision"] == precision and c["batch"] == batch
            )
            if not pts:
                continue
            xs, p50, p99 = zip(*pts, strict=True)
            color = colors[i % len(colors)]
            ax.plot(xs, p50, "-", marker="o", color=color, label=f"{label(system, precision)} p50")
            ax.plot(xs, p99, "--", marker="x", color=color, label=f"{label(system, precision)} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{batch} row{'s' if batch > 1 else ''} per request")
        ax.set_xlabel("concurrent clients")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("request latency (ms)")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: dict[str, Any], out: Path) -> list[Path]:
    return [throughput(results, out / "throughput.png"), latency(results, out / "latency.png")]
