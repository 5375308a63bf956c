"""The quality report dict (``quality.json``), the ``--min-quality`` gate and its table rendering."""

from __future__ import annotations

from typing import Any

from exasol_mlflow_server.exporter.validate import primary_metric

_ORDER = (
    "max_abs_diff",
    "cosine_mean",
    "cosine_min",
    "label_agreement",
    "token_label_agreement",
    "start_agreement",
    "end_agreement",
    "answer_agreement",
    "top1_agreement",
    "exact_match",
    "token_agreement",
)


def build(
    *,
    task: str,
    precision: str,
    optimization: str,
    samples: str,
    n_samples: int,
    max_length: int,
    batch_size: int,
    provider: str | None,
    vs_pytorch: dict[str, float] | None,
    vs_fp32_onnx: dict[str, float] | None,
    speed: dict[str, float] | None,
    serving: dict[str, Any] | None = None,
    onnx_bytes: int,
    pytorch_bytes: int,
    skipped: str | None = None,
) -> dict[str, Any]:
    metric = primary_metric(task)
    report: dict[str, Any] = {
        "task": task,
        "precision": precision,
        "optimization": optimization,
        "reference": "pytorch fp32",
        "samples": samples,
        "n_samples": n_samples,
        "max_length": max_length,
        "batch_size": batch_size,
        "onnx_provider": provider,
    }
    report.update(vs_pytorch or {})
    report["vs_fp32_onnx"] = vs_fp32_onnx
    # the engine `serve --backend auto` picks on this machine, when it is not ONNX Runtime
    report["serving_backend"] = serving
    report["primary"] = {"metric": metric, "value": (vs_pytorch or {}).get(metric)}
    report["size_bytes"] = {
        "onnx": onnx_bytes,
        "pytorch": pytorch_bytes,
        "ratio": round(onnx_bytes / pytorch_bytes, 4) if pytorch_bytes else None,
    }
    if speed:
        report["speed_rows_per_s"] = {
            "pytorch": speed.get("pytorch"),
            "onnx": speed.get("onnx"),
            "speedup": round(speed["onnx"] / speed["pytorch"], 2) if speed.get("pytorch") else None,
            "onnx_fp32": speed.get("onnx_fp32"),
            "batch_size": batch_size,
        }
    else:
        report["speed_rows_per_s"] = None
    report["skipped"] = skipped
    report["gate"] = None
    return report


def apply_gate(report: dict[str, Any], min_quality: float | None) -> str | None:
    """Record the gate in ``report``; return a failure message or None."""
    if min_quality is None:
        return None
    primary = report["primary"]
    value = primary["value"]
    passed = value is not None and value >= min_quality
    report["gate"] = {
        "min_quality": min_quality,
        "metric": primary["metric"],
        "value": value,
        "passed": passed,
    }
    if passed:
        return None
    if value is None:
        return f"quality gate: {primary['metric']} could not be measured ({report.get('skipped')}); --min-quality {min_quality} cannot be checked"
    return (
        f"quality gate failed: {primary['metric']} = {value:.4f} is below --min-quality {min_quality} "
        f"({report['precision']} {report['optimization']} vs PyTorch on {report['n_samples']} samples)"
    )


def format_table(report: dict[str, Any]) -> str:
    """A readable summary of ``report`` for the terminal."""
    fp32 = report.get("vs_fp32_onnx") or {}
    rows: list[tuple[str, str, str]] = [
        ("metric", "ONNX vs PyTorch", "vs fp32 ONNX" if fp32 else "")
    ]
    for key in _ORDER:
        if key in report or key in fp32:
            rows.append((key, _fmt(report.get(key)), _fmt(fp32.get(key)) if fp32 else ""))
    size = report["size_bytes"]
    rows.append(
        ("size (MB)", f"{size['onnx'] / 1e6:.1f} (PyTorch {size['pytorch'] / 1e6:.1f})", "")
    )
    speed = report.get("speed_rows_per_s")
    if speed:
        rows.append(
            (
                f"rows/s (batch {speed['batch_size']})",
                f"{speed['onnx']:.1f} (PyTorch {speed['pytorch']:.1f}, x{speed['speedup']})",
                f"{speed['onnx_fp32']:.1f} (fp32 ONNX)" if speed.get("onnx_fp32") else "",
            )
        )
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    head = (
        f"quality: {report['task']} {report['precision']} {report['optimization']}, "
        f"{report['n_samples']} samples ({report['samples']}), provider {report['onnx_provider']}"
    )
    lines = [head]
    for i, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(width[j]) for j, cell in enumerate(row)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in width).rstrip())
    serving = report.get("serving_backend")
    if serving:
        metric = report["primary"]["metric"]
        vs = serving.get("vs_pytorch") or {}
        lines.append(
            f"served here by {serving['backend']} (serve --backend auto): {metric} "
            f"{_fmt(vs.get(metric))} vs PyTorch, {_fmt((serving.get('vs_onnx') or {}).get(metric))} "
            "vs this ONNX model"
        )
    if report.get("skipped"):
        lines.append(f"skipped: {report['skipped']}")
    gate = report.get("gate")
    if gate:
        verdict = "passed" if gate["passed"] else "FAILED"
        lines.append(f"gate: {gate['metric']} >= {gate['min_quality']}: {verdict}")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)
