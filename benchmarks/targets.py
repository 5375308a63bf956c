"""The issues' targets, as ratios of cells measured side by side in the same run.

"Best fp32-grade" is the fastest served variant whose arithmetic is fp32 or bf16 (OpenVINO on
the fp32 export: mean cosine >= 0.9999 to fp32), at batch 100 x 1 client. The three bf16 targets
(issue 12) are set for CPUs with native bf16 (AMX-BF16 or AVX512-BF16); on other CPUs they are
reported as not applicable. Each target carries an ``explain`` line from the same run, so that a
miss comes with the measurement that accounts for it.
"""

from __future__ import annotations

from typing import Any

Cell = dict[str, Any]


def find(
    results: dict[str, Any],
    system: str,
    precision: str | None,
    batch: int | str,
    clients: int | None = None,
    backend: str | None = "any",
    **match: Any,
) -> Cell | None:
    """The cell with these coordinates (grid cells unless ``scenario=...`` is given)."""
    match.setdefault("scenario", None)
    for cell in results.get("cells", []):
        if (
            cell["system"] == system
            and (precision is None or cell["precision"] == precision)
            and (backend == "any" or cell.get("backend") == backend)
            and cell["batch"] == batch
            and cell["clients"] == clients
            and all(cell.get(k) == v for k, v in match.items())
            and cell["status"] == "ok"
            and cell.get("rows", 0) > 0
        ):
            return cell
    return None


def best(cells: list[Cell | None]) -> Cell | None:
    found = [c for c in cells if c]
    return max(found, key=lambda c: c["rows_per_s"]) if found else None


def label(cell: Cell | None) -> str:
    if not cell:
        return "—"
    backend = {"onnxruntime": "ORT", "openvino": "OpenVINO"}.get(cell.get("backend") or "", "")
    return " ".join(x for x in (backend, cell["precision"]) if x)


def _target(
    name: str,
    num: Cell | None,
    den: Cell | None,
    threshold: float,
    extra: str = "",
    explain: str = "",
    applies: str | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "threshold": threshold, "explain": explain}
    if num is None or den is None or not den.get("rows_per_s"):
        out.update(measured=None, met=None, by=None,
                   detail=f"a cell it needs was skipped or not run {extra}".strip())  # fmt: skip
        return out
    ratio = num["rows_per_s"] / den["rows_per_s"]
    out.update(
        measured=ratio,
        met=ratio >= threshold if applies is None else None,
        by=ratio / threshold - 1.0,
        detail=f"{num['rows_per_s']:.1f} vs {den['rows_per_s']:.1f} rows/s {extra}".strip(),
    )
    if applies is not None:
        out["not_applicable"] = applies
    return out


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    variants = results.get("variants", [])
    graded = [v for v in variants if v["fp32_grade"]]
    ref = variants[0] if variants else {"precision": "fp32", "backend": "onnxruntime"}

    def served(v: dict[str, Any], batch: int, clients: int, **kw: Any) -> Cell | None:
        return find(results, "server", v["precision"], batch, clients, v["backend"], **kw)

    def inproc(v: dict[str, Any], batch: int | str) -> Cell | None:
        return find(results, "runtime", v["precision"], batch, None, v["backend"])

    fast = best([served(v, 100, 1) for v in graded])
    fast_v = next((v for v in graded if fast and served(v, 100, 1) is fast), ref)
    bf16 = results.get("native_bf16") or {}
    na = None if bf16.get("native") else "this CPU has no native bf16 (no AMX-BF16/AVX512-BF16)"
    ceiling_ref = inproc(ref, 100)
    ceiling_fast = inproc(fast_v, 100)
    mlflow = find(results, "mlflow", "fp32", 100, 1)
    why_mlflow = (results.get("mlflow") or {}).get("reason", "")
    emb_fast = best([served(v, 100, 1, scenario="embeddings") for v in graded])
    infinity = best([find(results, "infinity", p, 100, 1, scenario="embeddings")
                     for p in ("int8", "fp32")])  # fmt: skip
    why_inf = (results.get("infinity") or {}).get("reason", "")
    repeats = {
        (c.get("column"), c.get("cache_mb")): c
        for c in results.get("cells", [])
        if c.get("scenario") == "repeats" and c["status"] == "ok"
    }
    unique_on = repeats.get(("unique", 128))
    over = {c.get("role"): c for c in results.get("cells", []) if c.get("scenario") == "overload"}
    overload = results.get("overload") or {}
    engine = (
        f"in-process ceilings at batch 100: {label(ceiling_fast)} {_rate(ceiling_fast)} vs "
        f"{label(ceiling_ref)} {_rate(ceiling_ref)} rows/s "
        f"({_ratio(ceiling_fast, ceiling_ref)} from the engine alone); served / in-process "
        f"{_ratio(fast, ceiling_fast)}"
    )
    return [
        _target(
            f"best fp32-grade served ({label(fast)}), batch 100 x 1 client >= 3 x the ORT fp32 "
            "in-process ceiling (batch 100)",
            fast, ceiling_ref, 3.0, explain=engine, applies=na,
        ),
        _target(
            f"best fp32-grade served ({label(fast)}) >= 6 x `mlflow models serve` (batch 100 x 1)",
            fast, mlflow, 6.0, f"({why_mlflow})" if why_mlflow and not mlflow else "",
            explain=engine + f"; ORT fp32 served vs MLflow {_ratio(served(ref, 100, 1), mlflow)}",
            applies=na,
        ),
        _target(
            f"best fp32-grade served ({label(emb_fast)}) >= 1.8 x infinity-emb's best "
            f"({label(infinity)}), MiniLM embeddings, batch 100 x 1",
            emb_fast, infinity, 1.8, f"({why_inf})" if why_inf and not infinity else "",
            explain=_peer_line(results), applies=na,
        ),
        *[
            _target(
                f"{label(b100)} served: batch 1 x 16 clients >= 0.85 x batch 100 x 1 client",
                b1, b100, 0.85,
                explain=_overhead_line(b1, b100)
                + f"; in process, one row per run gives {_ratio(inproc(v, 1), inproc(v, 100))} "
                "of batch 100 (the engine's own cost per run)",
            )
            for v in variants
            for b1, b100 in [(served(v, 1, 16), served(v, 100, 1))]
        ],
        _target(
            f"overload: goodput with {overload.get('offered_rows', '?')} rows offered against "
            f"--max-queued-rows {overload.get('queue_rows', '?')} >= 0.9 x capacity",
            over.get("overload"), over.get("capacity"), 0.9,
            f"; {overload.get('rejected', 0)} x 503, p50 {_ms(overload.get('rejected_p50_ms'))}",
            explain=f"accepted requests p50 {_ms(overload.get('accepted_p50_ms'))}; other "
            f"errors {overload.get('other_errors', '?')}",
        ),
        _target(
            "20-distinct column >= 5 x the unique column (100-row requests, cache on)",
            repeats.get(("20 distinct", 128)), unique_on, 5.0,
            explain=f"cache off: {_ratio(repeats.get(('20 distinct', 0)), repeats.get(('unique', 0)))}"
            " (in-request dedup only)",
        ),
        _target(
            "50% repeats column >= 1.8 x the unique column (cache on)",
            repeats.get(("50% repeats", 128)), unique_on, 1.8,
            explain=f"cache off: {_ratio(repeats.get(('50% repeats', 0)), repeats.get(('unique', 0)))}",
        ),
    ]  # fmt: skip


def _rate(cell: Cell | None) -> str:
    return f"{cell['rows_per_s']:.1f}" if cell else "—"


def _ratio(num: Cell | None, den: Cell | None) -> str:
    if not num or not den or not den.get("rows_per_s"):
        return "—"
    return f"{num['rows_per_s'] / den['rows_per_s']:.2f}x"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def _overhead_line(b1: Cell | None, b100: Cell | None) -> str:
    if not b1 or not b100:
        return ""
    parts = [
        f"server CPU per row {b1.get('server_cpu_ms_per_row', 0):.2f} ms at batch 1 vs "
        f"{b100.get('server_cpu_ms_per_row', 0):.2f} ms at batch 100",
        f"client ({b1.get('client')}) {b1.get('client_cpu_share', 0):.1%} of the CPU",
    ]
    return "; ".join(parts)


def _peer_line(results: dict[str, Any]) -> str:
    same = find(results, "server", "int8", 100, 1, "onnxruntime", scenario="embeddings")
    inf8 = find(results, "infinity", "int8", 100, 1, scenario="embeddings")
    ref = find(results, "server", "fp32", 100, 1, "onnxruntime", scenario="embeddings")
    inf32 = find(results, "infinity", "fp32", 100, 1, scenario="embeddings")
    return (
        f"same graphs: ours ORT int8 vs infinity int8 {_ratio(same, inf8)}, ours ORT fp32 vs "
        f"infinity fp32 {_ratio(ref, inf32)}"
    )


def describe(target: dict[str, Any]) -> str:
    if target.get("not_applicable"):
        return f"not applicable: {target['not_applicable']}"
    if target["met"] is None:
        return "not measured"
    by = target["by"]
    if target["met"]:
        return f"met (+{by:.0%} over the threshold)"
    return f"missed by {-by:.0%} (needs {1 / (1 + by):.2f}x more)"
