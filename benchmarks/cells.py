"""One served cell: B rows per request x N concurrent clients against a running server.

Batch-1 cells use ``wrk`` (a C client, see ``wrk.py``) when it is installed: there a Python
client thread costs about as much CPU per request as the server. The other cells use the Python
client (``client.py``), which finishes every request it starts. Every cell records which client
ran, the client's CPU share of the machine and the server's CPU time per row.
"""

from __future__ import annotations

import os
from typing import Any

from . import client, harness, wrk
from .workload import Workload

WRK_MAX_BATCH = 1  # wrk drops the requests in flight when its time is up: small requests only


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def session_cpu_s(pid: int | None) -> float:
    """utime + stime of every process in the session led by ``pid`` (a server and its workers)."""
    return 0.0 if pid is None else harness.session_cpu_s(pid)


def use_wrk(batch: int) -> bool:
    return batch <= WRK_MAX_BATCH and wrk.wrk_binary() is not None


def measure(
    port: int,
    workload: Workload,
    requests: list[client.Request],
    clients: int,
    time_cap_s: float,
    server_pid: int | None = None,
    endpoint: client.Endpoint = client.INVOCATIONS,
    backoff: bool = False,
    cycle: bool = False,
) -> dict[str, Any]:
    """Run one cell and return its stats (rows/s, latency, errors, client and server CPU)."""
    batch = len(requests[0].rows)
    cpu0 = session_cpu_s(server_pid)
    if use_wrk(batch) and not backoff and not cycle:
        res = wrk.run_wrk(port, [r.body for r in requests], clients, time_cap_s, path=endpoint.path)
        stats = _wrk_stats(res, workload, requests, batch)
    else:
        shares = client.split_clients(requests, clients)
        load = client.run_load(
            port, shares, time_cap_s, path=endpoint.path, backoff=backoff, cycle=cycle
        )
        stats = load.stats(workload)
    server_cpu = session_cpu_s(server_pid) - cpu0
    wall = max(stats["seconds"], 1e-9)
    stats["client_cpu_share"] = stats["client_cpu_s"] / (wall * cpu_count())
    if server_pid is not None:
        stats["server_cpu_share"] = server_cpu / (wall * cpu_count())
        stats["server_cpu_ms_per_row"] = server_cpu / max(stats["rows"], 1) * 1e3
    return stats


def _wrk_stats(
    res: wrk.WrkResult, workload: Workload, requests: list[client.Request], batch: int
) -> dict[str, Any]:
    rows = res.ok * batch
    used = [i for r in requests for i in r.rows]
    tokens = float(workload.tokens[used].mean()) if used else 0.0
    flops = float(workload.flops[used].mean()) if used else 0.0
    wall = max(res.seconds, 1e-9)
    return {
        "client": "wrk",
        "client_cpu_s": round(res.client_cpu_s, 3),
        "rows": rows,
        "requests": res.requests,
        "seconds": round(res.seconds, 3),
        "rows_per_s": rows / wall,
        "tokens_per_s": rows * tokens / wall,
        "flops_per_s": rows * flops / wall,
        "p50_ms": res.p50_ms,
        "p99_ms": res.p99_ms,
        "errors": res.requests - res.ok + res.socket_errors + res.timeouts,
        "statuses": res.statuses,
        "error_samples": [],
        "busy_p50_ms": None,
    }


def ratio(num: dict[str, Any] | None, den: dict[str, Any] | None) -> float | None:
    if not num or not den or not den.get("rows_per_s"):
        return None
    return float(num["rows_per_s"]) / float(den["rows_per_s"])
