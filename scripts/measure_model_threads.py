"""How several models in one process share the CPU: rows/s of one busy model alone, beside an
idle model, and two busy models -- for the thread rules in question (all cores per model with
ONNX Runtime's spinning on or off; cores split between the models). In-process (no HTTP), the
server's own pipeline and batcher; configurations interleaved in rounds, so that a shared,
noisy machine affects them alike.

    python scripts/measure_model_threads.py MODEL_DIR [--seconds 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import threading
import time
from pathlib import Path

import onnxruntime as ort
from exasol_mlflow_server.runtime.batcher import Batcher
from exasol_mlflow_server.runtime.model import load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "exasol",
    "runs",
    "analytics",
    "in",
    "memory",
]
CONFIGS = {  # name: (models loaded, models busy, intra-op threads per model, spinning)
    "one model, all cores, no spinning (the server)": (1, 1, 0, False),
    "one model, all cores, spinning": (1, 1, 0, True),
    "two loaded, one busy, all cores each, no spinning (the server)": (2, 1, 0, False),
    "two loaded, one busy, cores split": (2, 1, -1, False),
    "two busy, all cores each, no spinning (the server)": (2, 2, 0, False),
    "two busy, all cores each, spinning": (2, 2, 0, True),
    "two busy, cores split": (2, 2, -1, False),
}


def rows(n: int, seed: int) -> list[str]:
    return [
        " ".join(WORDS[(seed + i + j) % len(WORDS)] for j in range(8 + (i % 12))) for i in range(n)
    ]


@contextlib.contextmanager
def spin_waiting(allowed: bool):
    """The server's sessions never spin on CPU; ``allowed``: measure them as if they did."""
    plain = ort.SessionOptions

    class Options(plain):
        def add_session_config_entry(self, key: str, value: str) -> None:
            if not (allowed and key == "session.intra_op.allow_spinning"):
                super().add_session_config_entry(key, value)

    ort.SessionOptions = Options
    try:
        yield
    finally:
        ort.SessionOptions = plain


def measure(model_dir: Path, loaded: int, busy: int, threads: int, spin: bool, seconds: float):
    cores = len(os.sched_getaffinity(0))
    per_model = cores if threads == 0 else max(1, cores // loaded)
    pipelines = []
    for _ in range(loaded):
        with spin_waiting(spin):
            model = load_model(model_dir, threads=per_model)
        pipelines.append(Pipeline(model, Batcher(model.run_batch, 512, 0.001, 20000)))
    for p in pipelines:
        p.warm_up()
    counts = [0] * busy
    stop = threading.Event()

    def drive(k: int, seed: int) -> None:
        payload = Payload({"text": rows(100, seed)}, 100, {})
        while not stop.is_set():
            pipelines[k].predict_payload(payload)
            counts[k] += 100

    drivers = [
        threading.Thread(target=drive, args=(k, 7 * c + k)) for k in range(busy) for c in range(2)
    ]
    for d in drivers:
        d.start()
    time.sleep(1.0)  # warm
    start, before = time.monotonic(), list(counts)
    time.sleep(seconds)
    elapsed, after = time.monotonic() - start, list(counts)
    stop.set()
    for d in drivers:
        d.join()
    for p in pipelines:
        p.close()
    return [(a - b) / elapsed for a, b in zip(after, before, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[list[float]]] = {name: [] for name in CONFIGS}
    loads = []
    for r in range(args.rounds):
        for name, config in CONFIGS.items():
            results[name].append(measure(args.model, *config, args.seconds))
            loads.append(os.getloadavg()[0])
            print(f"round {r + 1} {name}: {[round(x, 1) for x in results[name][-1]]}", flush=True)
    print(
        f"\ncores {len(os.sched_getaffinity(0))}, load average during the run {min(loads):.1f}-{max(loads):.1f}"
    )
    base = statistics.median(sum(x) for x in results[next(iter(CONFIGS))])
    print(
        "| configuration | rows/s per busy model (median of rounds) | total rows/s | total vs one model alone | spread of total |"
    )
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        totals = [sum(x) for x in runs]
        per = [statistics.median(x[k] for x in runs) for k in range(len(runs[0]))]
        print(
            f"| {name} | {' / '.join(f'{v:.0f}' for v in per)} | {statistics.median(totals):.0f} | "
            f"{statistics.median(totals) / base:.2f}x | {min(totals):.0f}-{max(totals):.0f} |"
        )


if __name__ == "__main__":
    main()
