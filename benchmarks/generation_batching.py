"""Step-level (continuous) vs static batching of generation requests, in process.

``python -m exasol_mlflow_server.benchmarks.generation_batching MODEL_DIR [--rounds 3]``

A mixed workload from several client threads at once: most requests want a few new tokens,
some want many (``min_new_tokens`` forces the lengths, so both modes do the same work). With
static batches (``join=False``) new rows wait until the running batch is done; with step-level
batching they join between decoding steps. Reported per mode, interleaved A/B per round: total
new tokens/s and the short requests' median and p90 latency. Figures are noisy on a shared
machine; compare ratios within one run.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

from exasol_mlflow_server.runtime.generation.scheduler import Scheduler
from exasol_mlflow_server.runtime.model import load_model

SHORT, LONG = 8, 96
PROMPTS = ["Hello world", "The meeting was moved to Thursday.", "Paris", "Stock prices fell"]


def run_mode(model, join: bool, clients: int, per_client: int) -> dict[str, float]:
    scheduler = Scheduler(model.lm, join=join)
    task = model.task
    latencies: list[float] = []
    tokens = [0]
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(per_client):
            n = LONG if (c + i) % 5 == 0 else SHORT
            params = {"max_new_tokens": n, "min_new_tokens": n, "do_sample": False, "num_beams": 1}
            encoded = task.encode(
                {"text": [PROMPTS[(c + i) % len(PROMPTS)]]}, task.parse_params(params)
            )
            start = time.perf_counter()
            out = scheduler.execute(encoded.seqs, deadline=time.monotonic() + 600)
            with lock:
                tokens[0] += len(out[0])
                if n == SHORT:
                    latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    scheduler.close()
    latencies.sort()
    return {
        "tokens_per_s": tokens[0] / elapsed,
        "short_p50_s": statistics.median(latencies),
        "short_p90_s": latencies[int(0.9 * (len(latencies) - 1))],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="an exported generative model directory")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    args = parser.parse_args(argv)
    model = load_model(args.model, device="cpu", threads=args.threads or 2)
    results: dict[str, list[dict[str, float]]] = {"step-level": [], "static": []}
    for _ in range(args.rounds):
        for name, join in (("step-level", True), ("static", False)):
            results[name].append(run_mode(model, join, args.clients, args.per_client))
    for name, runs in results.items():
        cells = []
        for key in ("tokens_per_s", "short_p50_s", "short_p90_s"):
            values = [r[key] for r in runs]
            cells.append(
                f"{key} {statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"
            )
        print(f"{name:10s}  " + "  ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
