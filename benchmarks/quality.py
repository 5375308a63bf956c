"""Do two servers answer the same? Cosine of embeddings, or agreement of predicted labels."""

from __future__ import annotations

from typing import Any

import numpy as np


def _label(pred: Any) -> str:
    if isinstance(pred, dict):
        return str(pred.get("label"))
    if isinstance(pred, list) and pred and isinstance(pred[0], dict):
        return str(pred[0].get("label"))  # top_k lists: best first
    return str(pred)


def _score(pred: Any) -> float | None:
    if isinstance(pred, dict) and isinstance(pred.get("score"), (int, float)):
        return float(pred["score"])
    return None


def compare(task: str, reference: list[Any], other: list[Any]) -> dict[str, Any]:
    """Quality of ``other`` against ``reference`` on the rows both answered (same order)."""
    n = min(len(reference), len(other))
    if n == 0:
        return {"rows": 0}
    if task == "feature-extraction":
        a = np.asarray(reference[:n], dtype=np.float64)
        b = np.asarray(other[:n], dtype=np.float64)
        cos = (a * b).sum(1) / np.maximum(
            np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12
        )
        return {
            "rows": n,
            "metric": "cosine",
            "cosine_mean": float(cos.mean()),
            "cosine_min": float(cos.min()),
            "cosine_p01": float(np.percentile(cos, 1)),
        }
    labels_a = [_label(p) for p in reference[:n]]
    labels_b = [_label(p) for p in other[:n]]
    agree = float(np.mean([x == y for x, y in zip(labels_a, labels_b, strict=True)]))
    diffs = [
        abs(sa - sb)
        for pa, pb in zip(reference[:n], other[:n], strict=True)
        if _label(pa) == _label(pb)
        and (sa := _score(pa)) is not None
        and (sb := _score(pb)) is not None
    ]
    return {
        "rows": n,
        "metric": "label_agreement",
        "label_agreement": agree,
        "score_abs_diff_mean": float(np.mean(diffs)) if diffs else None,
        "score_abs_diff_max": float(np.max(diffs)) if diffs else None,
    }
