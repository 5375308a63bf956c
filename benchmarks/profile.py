"""Where the time of one request goes, stage by stage, for UDF batches of 1 and 100 rows.

In-process, with the runtime's own objects and no HTTP:

    json decode -> select + tokenise -> plan + collate/pad -> session.run -> reduce
                -> post-process (decode) -> json encode

plus the whole ``Pipeline.invoke`` through the synchronous executor and through the server's
dynamic :class:`Batcher` (its hand-off and its idle wait ``max_batch_delay_ms``). Against a
running server it adds the round trip of a trivial request (``GET /ping``) and of the same
``POST /invocations`` requests, so HTTP + queueing = server latency - in-process invoke.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .workload import Workload

STAGES = (
    "json_decode",
    "tokenise",
    "collate",
    "session_run",
    "reduce",
    "postprocess",
    "json_encode",
)


def _requests(workload: Workload, batch: int, count: int) -> list[list[str]]:
    return [[workload.texts[i] for i in workload.indices(k * batch, batch)] for k in range(count)]


def stage_profile(
    model_dir: Path,
    workload: Workload,
    threads: int,
    device: str,
    batches: tuple[int, ...] = (1, 100),
    rows: int = 300,
    backend: str = "onnxruntime",
) -> dict[str, Any]:
    """Per-row and per-request seconds of each stage, for each UDF batch size."""
    from exasol_mlflow_server.runtime.batcher import Batcher, plan_batches
    from exasol_mlflow_server.runtime.model import load_model
    from exasol_mlflow_server.runtime.pipeline import Pipeline
    from exasol_mlflow_server.runtime.protocol import JSON_TYPE, decode, encode_predictions
    from exasol_mlflow_server.runtime.settings import Settings
    from exasol_mlflow_server.runtime.tokenize import collate

    settings = Settings()
    model = load_model(model_dir, device=device, threads=threads, backend=backend)
    budget = settings.batch_token_budget(model.runner)
    task, runner = model.task, model.runner
    direct = Pipeline(model, budget=budget)
    batched = Pipeline(
        model, Batcher(model.run_batch, budget, settings.max_batch_delay_ms / 1000.0)
    )
    direct.warm_up()
    out: dict[str, Any] = {
        "max_batch_delay_ms": settings.max_batch_delay_ms,
        "backend": backend,
        "precision": model.runner.precision,
        "batches": {},
    }
    try:
        for batch in batches:
            reqs = _requests(workload, batch, max(1, min(100, rows // batch)))
            bodies = [orjson.dumps({"inputs": texts}) for texts in reqs]
            totals = dict.fromkeys(STAGES, 0.0)
            padded = real = batches_run = 0
            for body in bodies:
                t = time.perf_counter()
                payload = decode(body, JSON_TYPE, task.list_columns())
                t, totals["json_decode"] = _lap(t, totals["json_decode"])
                params = task.parse_params(payload.params)
                encoded = task.encode(task.select(payload), params)
                t, totals["tokenise"] = _lap(t, totals["tokenise"])
                seqs = encoded.seqs
                results: list[Any] = [None] * len(seqs)
                for mb in plan_batches([len(s[0]) for s in seqs], budget):
                    ids, mask, types, lengths = collate(
                        [seqs[i] for i in mb], model.tokenizer.pad_id
                    )
                    t, totals["collate"] = _lap(t, totals["collate"])
                    padded, real = padded + ids.size, real + int(lengths.sum())
                    batches_run += 1
                    outputs = runner.run(
                        {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
                        list(task.outputs),
                    )
                    t, totals["session_run"] = _lap(t, totals["session_run"])
                    for i, res in zip(mb, task.reduce(outputs, lengths), strict=True):
                        results[i] = res
                    t, totals["reduce"] = _lap(t, totals["reduce"])
                predictions = task.decode(encoded, results, params)
                t, totals["postprocess"] = _lap(t, totals["postprocess"])
                encode_predictions(predictions)
                t, totals["json_encode"] = _lap(t, totals["json_encode"])
            n_rows = sum(len(r) for r in reqs)
            entry: dict[str, Any] = {
                "requests": len(bodies),
                "rows": n_rows,
                "padding": padded / max(real, 1),
                "micro_batches": batches_run,
                "us_per_row": {k: v / n_rows * 1e6 for k, v in totals.items()},
                "ms_per_request": {k: v / len(bodies) * 1e3 for k, v in totals.items()},
            }
            for name, pipe in (("invoke_direct", direct), ("invoke_batcher", batched)):
                t0 = time.perf_counter()
                for body in bodies:
                    pipe.invoke(body, JSON_TYPE)
                entry["ms_per_request"][name] = (time.perf_counter() - t0) / len(bodies) * 1e3
            entry["bodies"] = bodies
            out["batches"][str(batch)] = entry
    finally:
        batched.close()
        direct.close()
    return out


def _lap(t: float, total: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now, total + (now - t)


def http_profile(port: int, profile: dict[str, Any]) -> None:
    """Add the trivial-request round trip and the server latency of the profiled requests."""
    from .client import ping_latency, post_latencies

    profile["ping_ms"] = ping_latency(port) * 1e3
    for entry in profile["batches"].values():
        times = post_latencies(port, entry["bodies"])
        entry["ms_per_request"]["server_post"] = float(np.mean(times)) * 1e3
        entry["ms_per_request"]["http_and_queue"] = (
            entry["ms_per_request"]["server_post"] - entry["ms_per_request"]["invoke_direct"]
        )


def strip_bodies(profile: dict[str, Any]) -> dict[str, Any]:
    for entry in profile.get("batches", {}).values():
        entry.pop("bodies", None)
    return profile
