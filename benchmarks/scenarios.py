"""Request mixes beyond the grid, on our server: repeated columns and a 3x overload.

**Repeated columns** (100-row requests, one client): a column of unique rows, a column of 20
distinct values, and a column in which half the rows repeat an earlier row, each of rows never
sent to the server before (a fresh pool, disjoint columns), against the server with the result
cache off (``--result-cache-mb 0``: only a request's own duplicates are shared) and on (128 MiB).

**Overload**: ``clients`` x ``batch``-row requests for a bounded time against
``--max-queued-rows queue`` -- several times what the queue holds -- with clients that, like
the UDF client, retry a 503 after its ``Retry-After`` (the target), and once more as a storm of
clients that retry at once (reported). Goodput (rows/s of the 200s) is set against the capacity
the same server measured just before with few enough clients that nothing is rejected (same
accounting: rows of the requests started before the time cap / time until the last one ended).
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from . import cells, client, servers
from .rows import generate_rows
from .workload import Workload

CACHE_ON_MB = 128
DISTINCT = 20
REPEAT_SHARE = 0.5
COLUMNS = ("unique", f"{DISTINCT} distinct", f"{REPEAT_SHARE:.0%} repeats")


def columns(n_rows: int, seed: int) -> tuple[int, dict[str, list[int]]]:
    """Pool size needed and the three columns as row indices of that pool (disjoint rows)."""
    rng = random.Random(seed)
    unique = list(range(n_rows))
    distinct = list(range(n_rows, n_rows + DISTINCT))
    fresh = iter(range(n_rows + DISTINCT, 10**9))
    half: list[int] = []
    for _ in range(n_rows):
        half.append(rng.choice(half) if half and rng.random() < REPEAT_SHARE else next(fresh))
    used = max(half) + 1
    twenty = [rng.choice(distinct) for _ in range(5 * n_rows)]  # cheap when cached: more rows
    return used, dict(zip(COLUMNS, (unique, twenty, half), strict=True))


def repeated_columns(bench: Any) -> None:
    opts, budget = bench.opts, bench.grid.repeats
    variant = bench.variants[1]  # the fast ORT variant (int8 on CPU), as issue 15 measured
    rows = max(budget.max_rows, 100)
    pool, cols = columns(rows, opts.seed)
    w = Workload.build(generate_rows(pool, opts.seed + 1), bench.dirs[variant.export])
    summary: dict[str, Any] = {
        "variant": variant.name,
        "columns": {
            name: {"rows": len(col), "distinct": len(set(col))} for name, col in cols.items()
        },
    }
    for cache_mb in (0, CACHE_ON_MB):
        srv = servers.Server.ours(
            bench.dirs[variant.export],
            opts.cache / "logs",
            bench.threads,
            opts.device,
            [*opts.server_args, "--result-cache-mb", str(cache_mb)],
            name=f"ours-{variant.name}-cache{cache_mb}",
            backend=variant.backend,
        )
        with srv:
            for name, col in cols.items():
                requests = client.build_requests(w, len(col), 100, column=col)
                stats = cells.measure(srv.port, w, requests, 1, budget.time_cap_s, srv.pid)
                bench.add_cell(
                    "server", variant.precision, 100, 1, stats, "", variant.backend,
                    scenario="repeats", column=name, cache_mb=cache_mb,
                )  # fmt: skip
    bench.results["repeats"] = summary


def reject_costs(model_dir: Path, body: bytes, repeats: int = 20) -> dict[str, float]:
    """CPU milliseconds a request of ``body`` costs before each place it could be rejected:
    admission by its size (step 1), after the JSON decode (step 2), and after tokenization
    (where the batch queue used to reject it). Thread CPU time, so other load matters little."""
    from exasol_mlflow_server.runtime.admission import Admission
    from exasol_mlflow_server.runtime.model import load_model
    from exasol_mlflow_server.runtime.protocol import JSON_TYPE, decode

    model = load_model(model_dir, device="cpu", threads=1)
    task = model.task
    adm = Admission(max_rows=10**9)

    def admit() -> None:
        adm.admit(len(body)).release()

    def decoded() -> Any:
        return decode(body, JSON_TYPE, task.list_columns())

    def tokenized() -> None:
        payload = decoded()
        task.encode(task.select(payload), task.parse_params(payload.params))

    out = {}
    for name, fn in (("admit", admit), ("decode", decoded), ("decode_tokenize", tokenized)):
        fn()
        start = time.thread_time()
        for _ in range(repeats):
            fn()
        out[f"{name}_ms"] = (time.thread_time() - start) / repeats * 1e3
    return out


def overload(bench: Any) -> None:
    opts, o = bench.opts, bench.grid.overload
    w = bench.workload
    variant = bench.variants[1]
    srv = servers.Server.ours(
        bench.dirs[variant.export],
        opts.cache / "logs",
        bench.threads,
        opts.device,
        [*opts.server_args, "--max-queued-rows", str(o.queue)],
        name=f"ours-{variant.name}-overload",
        backend=variant.backend,
    )
    with srv:
        total = o.batch * o.capacity_clients * o.capacity_rounds
        requests = client.build_requests(w, total, o.batch)
        capacity = cells.measure(srv.port, w, requests, o.capacity_clients, 1e9, srv.pid)
        bench.add_cell(
            "server", variant.precision, o.batch, o.capacity_clients, capacity, "",
            variant.backend, scenario="overload", role="capacity",
        )  # fmt: skip
        requests = client.build_requests(w, o.batch * o.clients * 4, o.batch)
        by_role = {}
        for role, backoff in (("overload", True), ("storm", False)):
            by_role[role] = cells.measure(
                srv.port, w, requests, o.clients, o.seconds, srv.pid, backoff=backoff, cycle=True
            )
            bench.add_cell(
                "server", variant.precision, o.batch, o.clients, by_role[role], "",
                variant.backend, scenario="overload", role=role,
            )  # fmt: skip
        loaded, storm = by_role["overload"], by_role["storm"]
    bench.results["overload"] = {
        "variant": variant.name,
        "reject_cost": reject_costs(bench.dirs[variant.export], requests[0].body),
        "queue_rows": o.queue,
        "offered_rows": o.batch * o.clients,
        "seconds": o.seconds,
        "capacity_rows_per_s": capacity["rows_per_s"],
        "goodput_rows_per_s": loaded["rows_per_s"],
        "goodput_ratio": cells.ratio(loaded, capacity),
        "rejected": loaded["statuses"].get("503", 0),
        "rejected_p50_ms": loaded.get("busy_p50_ms"),
        "accepted_p50_ms": loaded.get("p50_ms"),
        "other_errors": loaded["errors"] - loaded["statuses"].get("503", 0),
        "storm": {
            "goodput_ratio": cells.ratio(storm, capacity),
            "rejected": storm["statuses"].get("503", 0),
            "rejected_p50_ms": storm.get("busy_p50_ms"),
            "client_cpu_share": storm.get("client_cpu_share"),
        },
    }
