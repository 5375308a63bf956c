"""PNG plots of a results dict (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import NullLocator

LABELS = {
    "runtime": "in-process (runtime)",
    "ort-plain": "plain session",
    "torch": "PyTorch pipeline",
    "server": "our server",
    "mlflow": "mlflow models serve",
    "infinity": "infinity-emb",
}
BACKENDS = {"onnxruntime": "ORT", "openvino": "OpenVINO"}


def label(system: str, precision: str, backend: str | None = None) -> str:
    parts = [LABELS.get(system, system), BACKENDS.get(backend or "", ""), precision]
    return " ".join(p for p in parts if p)


def key(cell: dict[str, Any]) -> tuple[str, str, str]:
    """What a cell measured: (system, backend, precision)."""
    return (cell["system"], cell.get("backend") or "", cell["precision"])


def _ok(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        c
        for c in cells
        if c["status"] == "ok" and isinstance(c["batch"], int) and not c.get("scenario")
    ]


def _colors(cells: list[dict[str, Any]]) -> dict[tuple[str, str, str], str]:
    """One colour per (system, backend, precision) for every panel and plot."""
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = {name: i for i, name in enumerate(LABELS)}
    keys = sorted({key(c) for c in cells}, key=lambda k: (order.get(k[0], 99), k[1], k[2]))
    return {k: palette[i % len(palette)] for i, k in enumerate(keys)}


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
        for k, color in colors.items():
            system, backend, precision = k
            inproc = all(c["clients"] is None for c in cells if c["system"] == system)
            pts = sorted(
                (c["batch"], c["rows_per_s"])
                for c in cells
                if key(c) == k and (c["clients"] == n or inproc)
            )
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(
                    xs,
                    ys,
                    "--" if inproc else "-",
                    marker="o",
                    color=color,
                    label=label(system, precision, backend),
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
        for k, color in colors.items():
            pts = sorted(
                (c["clients"], c["p50_ms"], c["p99_ms"])
                for c in cells
                if key(c) == k and c["batch"] == batch
            )
            if not pts:
                continue
            xs, p50, p99 = zip(*pts, strict=True)
            name = label(k[0], k[2], k[1])
            ax.plot(xs, p50, "-", marker="o", color=color, label=f"{name} p50")
            ax.plot(xs, p99, "--", marker="x", color=color, label=f"{name} p99")
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
