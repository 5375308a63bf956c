"""The report's sections for the request mixes and the peers: repeated columns, overload,
infinity-emb on embeddings, the CPU's bf16, and what is not measured yet."""

from __future__ import annotations

from typing import Any

from . import plots
from .tables import num, table


def bf16(results: dict[str, Any]) -> list[str]:
    info = results.get("native_bf16") or {}
    variants = [v["name"] for v in results.get("variants", [])]
    if info.get("native"):
        kind = "AMX-BF16" if info.get("amx") else "AVX512-BF16 (no AMX)"
        text = (
            f"This CPU computes in bf16 natively ({kind}; {info.get('source')}), so the OpenVINO "
            "rows run bf16 on the fp32 export and the bf16 targets apply."
        )
        if not info.get("amx"):
            text += (
                " Without AMX, bf16 matrix arithmetic is AVX512-BF16's dot products: about twice "
                "the fp32 FMA rate at best, against AMX's tiles (several times more); the "
                "issue's 3x/6x/1.8x bf16 targets were set on an AMX machine."
            )
    else:
        text = (
            "This CPU has no native bf16 (no AMX-BF16, no AVX512-BF16): `--backend auto` stays on "
            "ONNX Runtime, the OpenVINO rows (if any) run fp32, and the bf16 targets are not "
            "applicable here."
        )
    return ["## bf16 on this CPU", "", text, "", f"Variants measured: {', '.join(variants)}.", ""]


def repeats(results: dict[str, Any]) -> list[str]:
    info = results.get("repeats")
    cells = [c for c in results.get("cells", []) if c.get("scenario") == "repeats"]
    if not info or not cells:
        return []
    by = {(c["column"], c["cache_mb"]): c for c in cells if c["status"] == "ok"}
    columns = list(info["columns"])
    unique = {mb: by.get(("unique", mb)) for mb in (0, 128)}
    rows = []
    for name in columns:
        row = [f"{name} ({info['columns'][name]['distinct']} distinct in "
               f"{info['columns'][name]['rows']} rows)"]  # fmt: skip
        for mb in (0, 128):
            cell, base = by.get((name, mb)), unique[mb]
            rate = num(cell["rows_per_s"]) if cell else "—"
            times = f" ({cell['rows_per_s'] / base['rows_per_s']:.2f}x)" if cell and base else ""
            row.append(rate + times)
        rows.append(row)
    return [
        "## Repeated columns",
        "",
        f"Our server ({info['variant']}), 100-row requests, one client; rows never sent before "
        "(a fresh pool; disjoint columns). Cache off = `--result-cache-mb 0` (a request's own "
        "duplicates are still computed once); on = `--result-cache-mb 128`. rows/s (x the unique "
        "column on the same server).",
        "",
        *table(["column", "cache off", "cache on"], rows),
        "",
    ]


def overload(results: dict[str, Any]) -> list[str]:
    info = results.get("overload")
    if not info:
        return []
    rows = [
        ["capacity (no rejections)", num(info["capacity_rows_per_s"])],
        ["goodput under overload (rows/s of 200s)", num(info["goodput_rows_per_s"])],
        ["goodput / capacity", num(info.get("goodput_ratio"), 2)],
        ["503 answers", str(info["rejected"])],
        ["503 latency p50 (ms)", num(info.get("rejected_p50_ms"), 1)],
        ["accepted latency p50 (ms)", num(info.get("accepted_p50_ms"), 1)],
        ["other errors", str(info["other_errors"])],
    ]
    storm = info.get("storm") or {}
    if storm:
        rows.append(
            [
                "storm (clients retry at once): goodput / capacity, 503s, 503 p50 (ms)",
                f"{num(storm.get('goodput_ratio'), 2)}, {storm.get('rejected')}, "
                f"{num(storm.get('rejected_p50_ms'), 1)}",
            ]
        )
    o = results["options"]["grid"]["overload"]
    cost = info.get("reject_cost") or {}
    if cost:
        rows.append(
            [
                f"CPU before a {o['batch']}-row request can be rejected (ms): by its size / "
                "after decode / after tokenization",
                f"{cost['admit_ms']:.3f} / {cost['decode_ms']:.2f} / {cost['decode_tokenize_ms']:.1f}",
            ]
        )
    return [
        "## Overload",
        "",
        f"Our server ({info['variant']}) with `--max-queued-rows {info['queue_rows']}`: capacity "
        f"= {o['capacity_clients']} clients x {o['batch']}-row requests ({o['capacity_rounds']} "
        f"each); overload = {o['clients']} clients x {o['batch']} rows for {o['seconds']:g} s "
        f"({o['clients'] * o['batch'] / o['queue']:g}x what the queue holds), each client retrying "
        "a 503 after its `Retry-After`, as the UDF client does. Both count the rows of the 200s over the time until the last "
        "request ended.",
        "",
        *table(["", ""], rows),
        "",
    ]


def peers(results: dict[str, Any]) -> list[str]:
    info = results.get("infinity") or {}
    cells = [c for c in results.get("cells", []) if c.get("scenario") == "embeddings"]
    lines = ["## Embeddings peer: infinity-emb", ""]
    if info.get("status") != "ok":
        lines += [f"infinity-emb not run: {info.get('reason', 'not requested')}.", ""]
    if not cells:
        return lines
    shapes = sorted({(c["batch"], c["clients"]) for c in cells}, key=lambda s: (-s[0], s[1]))
    keys = list(dict.fromkeys(plots.key(c) for c in cells))
    rows = []
    for k in keys:
        mine = {(c["batch"], c["clients"]): c for c in cells if plots.key(c) == k}
        rows.append(
            [plots.label(k[0], k[2], k[1])]
            + [
                num(mine[s]["rows_per_s"]) if s in mine and mine[s]["status"] == "ok" else "—"
                for s in shapes
            ]
        )
    lines += [
        f"all-MiniLM-L6-v2 feature-extraction, the same exported graphs for both servers "
        f"(infinity-emb {info.get('version', '')}, optimum engine, its int8 file "
        "`model_quantized.onnx` = our int8 graph, its `model.onnx` = our fp32 graph, mean "
        "pooling, batch size 32); all servers up at once and the cells interleaved. rows/s:",
        "",
        *table(["system", *[f"batch {b} x {c}" for b, c in shapes]], rows),
        "",
    ]
    quality = info.get("quality_vs_ours_fp32") or {}
    if quality:
        lines += ["Cosine to our ORT fp32 embeddings (same rows):", ""]
        lines += [
            f"- {name}: mean {num(q.get('cosine_mean'), 5)}, min {num(q.get('cosine_min'), 5)}"
            for name, q in quality.items()
        ]
        lines.append("")
    return lines


def generation(results: dict[str, Any]) -> list[str]:
    info = results.get("generation")
    cells = [c for c in results.get("cells", []) if c.get("scenario") == "generation"]
    if not info or not cells:
        return []
    batches = sorted({c["batch"] for c in cells})
    rows = []
    for system in info["systems"]:
        mine = {c["batch"]: c for c in cells if c["system"] == system and c["status"] == "ok"}
        name = plots.LABELS.get(system, system)
        rows.append([f"{name} rows/s"] + [num(mine[b]["rows_per_s"]) if b in mine else "—"
                                          for b in batches])  # fmt: skip
        rows.append([f"{name} new tokens/s"] + [num(mine[b]["new_tokens_per_s"], 0)
                                                if b in mine else "—" for b in batches])  # fmt: skip
    lines = [
        "## Generation",
        "",
        f"The seeded T5 (2 layers, d_model 64; trained to copy its input) as a `{info['task']}` "
        "model: our export behind our server (ONNX Runtime, KV-cache decoding loop, step-level "
        "batching) and MLflow's transformers-flavor `translation_en_to_de` pipeline behind "
        "`mlflow models serve`; greedy decoding with the model's own limits, one client, "
        f"{info['rows']} distinct two-sentence rows.",
        "",
        *table(["", *[f"batch {b}" for b in batches]], rows),
        "",
    ]
    if info.get("identical_outputs") is not None:
        lines += [
            f"Identical outputs (ours vs MLflow, 100 rows): {info['identical_outputs']:.0%}.",
            "",
        ]
    elif info.get("mlflow"):
        lines += [f"MLflow not run: {info['mlflow']}.", ""]
    return lines
