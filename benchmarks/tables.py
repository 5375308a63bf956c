"""The tables of ``report.md``: throughput matrices, every cell, the stage profile."""

from __future__ import annotations

import math
from typing import Any

from . import plots
from .profile import STAGES

SYSTEM_ORDER = ("runtime", "ort-plain", "torch", "server", "mlflow", "infinity")
BACKEND_ORDER = ("onnxruntime", "openvino")


def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def sorted_cells(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(c: dict[str, Any]) -> tuple:
        batch = c["batch"] if isinstance(c["batch"], int) else 10**9
        backend = c.get("backend") or ""
        return (
            c.get("scenario") or "",
            SYSTEM_ORDER.index(c["system"]) if c["system"] in SYSTEM_ORDER else 99,
            BACKEND_ORDER.index(backend) if backend in BACKEND_ORDER else -1,
            c["precision"],
            batch,
            c["clients"] or 0,
        )

    return sorted(cells, key=key)


def matrix(results: dict[str, Any]) -> list[str]:
    cells = [c for c in results["cells"] if not c.get("scenario")]
    grid = results["options"]["grid"]
    lines = [
        "## Throughput (rows/s)",
        "",
        "In-process systems have no clients: one column. `all` = the whole cell sorted by length.",
        "",
    ]
    inproc = [c for c in cells if c["clients"] is None]
    if inproc:
        cols = ["all", *grid["batches"]]
        rows = []
        for k in dict.fromkeys(plots.key(c) for c in sorted_cells(inproc)):
            by_batch = {c["batch"]: c for c in inproc if plots.key(c) == k}
            rows.append(
                [plots.label(k[0], k[2], k[1])]
                + [
                    num(by_batch[b].get("rows_per_s"))
                    if b in by_batch and by_batch[b]["status"] == "ok"
                    else "skipped"
                    if b in by_batch
                    else ""
                    for b in cols
                ]
            )
        lines += [*table(["system", *[f"batch {b}" for b in cols]], rows), ""]
    served = [c for c in cells if c["clients"] is not None]
    for k in dict.fromkeys(plots.key(c) for c in sorted_cells(served)):
        mine = {(c["batch"], c["clients"]): c for c in served if plots.key(c) == k}
        batches = sorted({b for b, _ in mine})
        clients = sorted({n for _, n in mine})
        rows = [
            [f"batch {b}"]
            + [
                num(mine[(b, n)]["rows_per_s"])
                if (b, n) in mine and mine[(b, n)]["status"] == "ok"
                else "skipped"
                if (b, n) in mine
                else ""
                for n in clients
            ]
            for b in batches
        ]
        lines += [
            f"**{plots.label(k[0], k[2], k[1])}**",
            "",
            *table(["", *[f"{n} client{'s' if n > 1 else ''}" for n in clients]], rows),
            "",
        ]
    return lines


def scenario(c: dict[str, Any]) -> str:
    if c.get("scenario") == "repeats":
        return f"{c['column']}, cache {'on' if c.get('cache_mb') else 'off'}"
    if c.get("scenario") == "overload":
        return str(c.get("role"))
    return c.get("scenario") or ""


def cells(results: dict[str, Any]) -> list[str]:
    header = ["system", "cell", "batch", "clients", "rows", "s", "rows/s", "tokens/s", "p50 ms",
              "p99 ms", "errors", "client (CPU)", "server CPU ms/row", "padding", "GFLOP/s",
              "efficiency"]  # fmt: skip
    rows = []
    for c in sorted_cells(results["cells"]):
        head = [plots.label(c["system"], c["precision"], c.get("backend")), scenario(c),
                str(c["batch"]), str(c["clients"] or "—")]  # fmt: skip
        if c["status"] != "ok":
            rows.append([*head, *[""] * (len(header) - 5), c["note"]])
            continue
        eff = c.get("efficiency")
        who = f"{c['client']} ({c['client_cpu_share']:.1%})" if c.get("client") else ""
        rows.append([
            *head, str(c["rows"]), num(c["seconds"], 2), num(c["rows_per_s"]),
            num(c["tokens_per_s"], 0), num(c["p50_ms"]), num(c["p99_ms"]), str(c["errors"]),
            who, num(c.get("server_cpu_ms_per_row"), 2),
            num(c.get("padding"), 2) + ("x" if c.get("padding") else ""),
            num(c["flops_per_s"] / 1e9),
            num(eff * 100 if eff is not None else None) + "%" + (f" {c['note']}" if c["note"] else ""),
        ])  # fmt: skip
    return [
        "## All cells",
        "",
        "Latency: per HTTP request (servers; 503s excluded) or per batch of B rows (in-process). "
        "Client: `wrk` (C) for batch 1, else the Python client, with its share of the machine's "
        "CPU during the cell; server CPU: the server process's CPU time per row answered "
        "(ONNX Runtime's spinning threads count too). Padding: tokens the in-process system ran "
        "(rows x longest row of each micro-batch) / the rows' own tokens (a client cannot see it "
        "for servers). GFLOP/s and efficiency use ideal FLOPs (see Notes); efficiency = achieved "
        "GFLOP/s ÷ the measured GEMM peak.",
        "",
        *table(header, rows),
        "",
    ]


def profile(results: dict[str, Any]) -> list[str]:
    prof = results.get("profile")
    if not prof:
        return ["## Profile", "", "not measured", ""]
    stages = [
        *STAGES,
        "invoke_direct",
        "invoke_batcher",
        "server_post",
        "http_and_queue",
    ]
    batches = list(prof["batches"])
    rows = []
    for stage in stages:
        row = [stage]
        for b in batches:
            entry = prof["batches"][b]
            ms = entry["ms_per_request"].get(stage)
            per_row = entry["us_per_row"].get(stage)
            if per_row is None and ms is not None:
                per_row = ms * 1e3 / max(1, entry["rows"] // max(1, entry["requests"]))
            row += [num(ms, 3), num(per_row, 1)]
        rows.append(row)
    for key, text, digits in (
        ("micro_batches", "micro-batches run (all requests)", 0),
        ("padding", "padding (padded / own tokens)", 2),
    ):
        rows.append(
            [text] + [x for b in batches for x in (num(prof["batches"][b].get(key), digits), "")]
        )
    header = ["stage"] + [
        x for b in batches for x in (f"batch {b}: ms/request", f"batch {b}: µs/row")
    ]
    return [
        "## Profile",
        "",
        "Stages timed in-process with the runtime's own objects (fp32 export); `invoke_direct` is "
        "the whole request without HTTP, `invoke_batcher` the same through the server's dynamic "
        f"batcher (idle wait {prof.get('max_batch_delay_ms')} ms), `server_post` the same requests "
        "over HTTP to our fp32 server, one client, and `http_and_queue` their difference. "
        f"A trivial request (`GET /ping`) takes {num(prof.get('ping_ms'), 3)} ms round trip. "
        "Padding: tokens in the padded micro-batches the server's plan made for these requests "
        "(length-sorted, token budget) / the rows' own tokens; the model pays for all of them.",
        "",
        *table(header, rows),
        "",
        *_where_time_goes(prof),
    ]


def _where_time_goes(prof: dict[str, Any]) -> list[str]:
    """One line per batch size: the shares of the request's time, in words."""
    lines = []
    for batch, entry in prof["batches"].items():
        ms = entry["ms_per_request"]
        stages = sum(ms.get(k, 0.0) for k in ("json_decode", "tokenise", "collate", "session_run",
                                              "reduce", "postprocess", "json_encode"))  # fmt: skip
        if stages <= 0:
            continue
        share = {k: ms.get(k, 0.0) / stages for k in ("session_run", "tokenise")}
        json_share = (ms.get("json_decode", 0.0) + ms.get("json_encode", 0.0)) / stages
        text = (
            f"- batch {batch}: session.run {share['session_run']:.0%} of the in-process time, "
            f"tokenisation {share['tokenise']:.0%}, JSON {json_share:.1%}"
        )
        pad = entry.get("padding") or 1.0
        if pad > 1.05:
            text += (
                f"; the model ran {pad:.2f}x the rows' own tokens (padding), so session.run "
                f"could take about {1 / pad:.0%} of its time with no padding"
            )
        if ms.get("server_post"):
            extra = ms["server_post"] - ms.get("invoke_direct", 0.0)
            text += (
                f"; over HTTP the request took {ms['server_post']:.1f} ms, "
                f"{extra:+.1f} ms vs in-process (HTTP, queueing, batcher wait; noisy)"
            )
        lines.append(text + ".")
    return [*lines, ""] if lines else []
