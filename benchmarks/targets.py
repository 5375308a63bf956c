"""The issue's targets, as ratios of cells measured side by side in the same run."""

from __future__ import annotations

from typing import Any

Cell = dict[str, Any]


def find(
    results: dict[str, Any],
    system: str,
    precision: str,
    batch: int | str,
    clients: int | None = None,
) -> Cell | None:
    for cell in results.get("cells", []):
        if (
            cell["system"] == system
            and cell["precision"] == precision
            and cell["batch"] == batch
            and cell["clients"] == clients
            and cell["status"] == "ok"
            and cell.get("rows", 0) > 0
        ):
            return cell
    return None


def _target(
    name: str,
    num: Cell | None,
    den: Cell | None,
    threshold: float,
    extra: str = "",
    quality_ok: bool | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "threshold": threshold}
    if num is None or den is None or not den.get("rows_per_s"):
        out.update(measured=None, met=None, by=None,
                   detail=f"a cell it needs was skipped or not run {extra}".strip())  # fmt: skip
        return out
    ratio = num["rows_per_s"] / den["rows_per_s"]
    met = ratio >= threshold and quality_ok is not False
    out.update(
        measured=ratio,
        met=met,
        by=ratio / threshold - 1.0,
        detail=f"{num['rows_per_s']:.1f} vs {den['rows_per_s']:.1f} rows/s {extra}".strip(),
    )
    return out


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    opts = results["options"]
    ref, low = opts["precisions"]
    grid = opts["grid"]
    many = max(grid["clients"])
    quality = results.get("quality", {}).get(f"{low}_vs_{ref}") or {}
    q_ok: bool | None = None
    q_text = "quality not measured"
    if quality.get("metric") == "cosine":
        q_ok = quality["cosine_mean"] >= 0.99
        q_text = (
            f"cosine to {ref}: mean {quality['cosine_mean']:.4f}, min "
            f"{quality['cosine_min']:.4f} (needs mean >= 0.99: {'ok' if q_ok else 'NOT MET'})"
        )
    elif quality.get("metric") == "label_agreement":
        q_text = (
            f"label agreement with {ref}: {quality['label_agreement']:.1%} on "
            f"{quality['rows']} rows (reported; the cosine criterion is for embeddings)"
        )
    server_ref = find(results, "server", ref, 100, 1)
    server_low = find(results, "server", low, 100, 1)
    mlflow = find(results, "mlflow", "fp32", 100, 1)
    skipped = results.get("mlflow", {}).get("reason")
    why_no_mlflow = f"(MLflow: {skipped})" if mlflow is None and skipped else ""
    ceiling = find(results, "ort-runtime", ref, 100)
    best = find(results, "ort-runtime", ref, "all")
    return [
        _target(
            f"server {ref}, batch 100 x 1 client >= 0.90 x in-process ceiling (ORT runtime, "
            "same batches)",
            server_ref,
            ceiling,
            0.90,
            f"(the whole-table sorted ceiling is {best['rows_per_s']:.1f} rows/s)" if best else "",
        ),
        _target(
            f"server {ref}, batch 1 x {many} clients >= 0.80 x batch 100 x 1 client",
            find(results, "server", ref, 1, many),
            server_ref,
            0.80,
        ),
        _target(
            f"server {low} >= 1.5 x {ref} (batch 100 x 1 client)",
            server_low,
            server_ref,
            1.5,
            f"; {q_text}",
            q_ok,
        ),
        _target(
            f"server {low} >= 3 x MLflow (batch 100 x 1 client)",
            server_low,
            mlflow,
            3.0,
            why_no_mlflow,
        ),
        _target(
            f"server {ref} >= 2.5 x MLflow (batch 100 x 1 client)",
            server_ref,
            mlflow,
            2.5,
            why_no_mlflow,
        ),
    ]


def describe(target: dict[str, Any]) -> str:
    if target["met"] is None:
        return "not measured"
    by = target["by"]
    if target["met"]:
        return f"met (+{by:.0%} over the threshold)"
    if by >= 0:  # the speed was enough; the quality condition failed
        return "missed (quality condition)"
    return f"missed by {-by:.0%} (needs {1 / (1 + by):.2f}x more)"
