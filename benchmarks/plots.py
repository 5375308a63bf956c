"""PNG plots of a results dict (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

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


def _colors(cells: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """One colour per (system, precision) for every panel and plot."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = {name: i for i, name in enumerate(LABELS)}
    keys = sorted(
        {(c["system"], c["precision"]) for c in cells}, key=lambda k: (order.get(k[0], 99), k[1])
    )
    return {key: palette[i % len(palette)] for i, key in enumerate(keys)}


def _legend(fig: Any, axes: Any) -> None:
    handles: dict[str, Any] = {}
    for ax in axes:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(text, handle)
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=min(4, len(handles)),
        fontsize=8,
        frameon=False,
    )


def _ticks(ax: Any, values: list[int]) -> None:
    ax.set_xticks(values)
    ax.set_xticklabels([str(v) for v in values])
    ax.xaxis.set_minor_locator(NullLocator())


def throughput(results: dict[str, Any], path: Path) -> Path:
    """rows/s vs UDF batch size (log x): one panel per client count; in-process lines in each."""
    cells = _ok(results["cells"])
    colors = _colors(cells)
    clients = sorted({c["clients"] for c in cells if c["clients"] is not None}) or [1]
    batches = sorted({c["batch"] for c in cells})
    fig, axes = plt.subplots(
        1, len(clients), figsize=(5.2 * len(clients), 5.0), squeeze=False, sharey=True
    )
    for ax, n in zip(axes[0], clients, strict=True):
        for (system, precision), color in colors.items():
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
                ax.plot(
                    xs,
                    ys,
                    "--" if inproc else "-",
                    marker="o",
                    color=color,
                    label=label(system, precision),
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        _ticks(ax, batches)
        ax.set_title(f"{n} concurrent client{'s' if n > 1 else ''}")
        ax.set_xlabel("rows per request (UDF batch size)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("rows/s (dashed: in-process, no HTTP)")
    env = results.get("environment", {}).get("cpu", {})
    fig.suptitle(
        f"Throughput, {results['options']['model']} ({env.get('model')}, "
        f"{results['options']['threads']} threads)"
    )
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    _legend(fig, axes[0])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def latency(results: dict[str, Any], path: Path) -> Path:
    """p50 (solid) and p99 (dashed) request latency vs concurrent clients, one panel per batch."""
    colors = _colors(_ok(results["cells"]))  # the same colours as in the throughput plot
    cells = [c for c in _ok(results["cells"]) if c["clients"] is not None]
    batches = sorted({c["batch"] for c in cells}) or [1]
    clients = sorted({c["clients"] for c in cells}) or [1]
    fig, axes = plt.subplots(1, len(batches), figsize=(4.3 * len(batches), 4.6), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        for (system, precision), color in colors.items():
            pts = sorted(
                (c["clients"], c["p50_ms"], c["p99_ms"])
                for c in cells
                if c["system"] == system and c["precision"] == precision and c["batch"] == batch
            )
            if not pts:
                continue
            xs, p50, p99 = zip(*pts, strict=True)
            ax.plot(xs, p50, "-", marker="o", color=color, label=f"{label(system, precision)} p50")
            ax.plot(xs, p99, "--", marker="x", color=color, label=f"{label(system, precision)} p99")
        ax.set_xscale("log")
        ax.set_yscale("log")
        _ticks(ax, clients)
        ax.set_title(f"{batch} row{'s' if batch > 1 else ''} per request")
        ax.set_xlabel("concurrent clients")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("request latency (ms)")
    fig.suptitle("Request latency: p50 (solid) and p99 (dashed)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    _legend(fig, axes[0])
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: dict[str, Any], out: Path) -> list[Path]:
    return [throughput(results, out / "throughput.png"), latency(results, out / "latency.png")]
