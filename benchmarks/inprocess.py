"""In-process systems (no HTTP): the ONNX Runtime ceilings and the PyTorch baseline.

* ``runtime``: our runtime's own ``load_model(..., backend=...)`` + ``LoadedModel.run_batch``
  (collate, run, reduce) on rows tokenised *before* the clock starts, cut into the same
  length-sorted micro-batches (``plan_batches`` under the backend's token budget) that the server
  would run for a request of B rows; ONNX Runtime or OpenVINO, named explicitly. Batch ``all``
  sorts the whole cell at once: the best case, no HTTP.
* ``ort-plain``: a plain ``onnxruntime.InferenceSession`` (default options, same thread count)
  on the same micro-batches, collated ahead of time: model time only.
* ``torch``: transformers + PyTorch, ``torch.set_num_threads``; each chunk of B rows is tokenised
  with dynamic padding to its longest row (no length sorting), like ``pipeline(rows, batch_size=B)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .workload import Budget, Workload

Chunk = list[int]


@dataclass
class System:
    """How one in-process system splits a chunk of B rows and runs one piece of it."""

    name: str
    precision: str
    plan: Callable[[Chunk], list[Chunk]]  # chunk -> micro-batches (row indices)
    prepare: Callable[[Chunk], Any]  # micro-batch -> what ``run`` takes (not timed)
    run: Callable[[Any], None]
    close: Callable[[], None] = lambda: None


def run_cell(
    system: System, workload: Workload, batch: int | None, rows: int, budget: Budget
) -> dict[str, Any]:
    """Process ``rows`` rows in chunks of ``batch`` until done or past the time cap.

    Like a client, a cell finishes the chunk (request) it started: the cap is checked between
    chunks. ``batch=None`` is one chunk (the whole cell sorted at once), so size ``rows`` to fit
    the cap: stopping it mid-way would leave only the short rows done (they run first).
    """
    size = batch or rows
    chunks = [workload.indices(s, min(size, rows - s)) for s in range(0, rows, size)]
    plans = [[(mb, system.prepare(mb)) for mb in system.plan(chunk)] for chunk in chunks]
    done: list[int] = []
    chunk_times: list[float] = []
    start = time.perf_counter()
    for plan in plans:
        if done and time.perf_counter() - start > budget.time_cap_s:
            break
        t0 = time.perf_counter()
        for mb, item in plan:
            system.run(item)
            done.extend(mb)
        else:
            chunk_times.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    lat = np.array(chunk_times) * 1000.0 if chunk_times else np.array([np.nan])
    return {
        "rows": len(done),
        "requests": len(chunk_times),
        "seconds": round(wall, 3),
        "rows_per_s": len(done) / wall,
        "tokens_per_s": float(workload.tokens[done].sum()) / wall,
        "flops_per_s": float(workload.flops[done].sum()) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "errors": 0,
    }


def padded_tokens(system: System, workload: Workload, chunk: Chunk) -> int:
    """Padded tokens the system runs for one chunk (to estimate a cell's time)."""
    return sum(len(mb) * int(workload.tokens[mb].max()) for mb in system.plan(chunk))


# ---- our runtime and plain ORT ---------------------------------------------------------------
def runtime_system(
    model_dir: Path, workload: Workload, threads: int, device: str, backend: str = "onnxruntime"
) -> System:
    from exasol_mlflow_server.runtime.model import load_model
    from exasol_mlflow_server.runtime.pipeline import Pipeline
    from exasol_mlflow_server.runtime.settings import Settings

    model = load_model(model_dir, device=device, threads=threads, backend=backend)
    budget = Settings().batch_token_budget(model.runner)
    pipeline = Pipeline(model, budget=budget)
    task = model.task
    seqs = task.encode({"text": workload.texts}, task.parse_params({})).seqs
    model.run_batch(seqs[:8])  # warm up
    return System(
        "runtime",
        "fp32" if model.runner.precision == "f32" else model.runner.precision,
        runtime_plan(workload, budget, model.runner.on_cuda),
        prepare=lambda mb: [seqs[j] for j in mb],
        run=model.run_batch,
        close=pipeline.close,
    )


def plain_ort_system(model_dir: Path, workload: Workload, threads: int, device: str) -> System:
    import json

    import onnxruntime as ort
    from exasol_mlflow_server.runtime.settings import CPU_BATCH_TOKENS, CUDA_BATCH_TOKENS
    from exasol_mlflow_server.runtime.tokenize import TextTokenizer, collate, to_seq

    # the server's micro-batches with ONNX Runtime
    budget = CUDA_BATCH_TOKENS if device == "cuda" else CPU_BATCH_TOKENS

    manifest = json.loads((model_dir / "exasol_model.json").read_text(encoding="utf-8"))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    providers = (
        ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "cuda"
        else ["CPUExecutionProvider"]
    )
    session = ort.InferenceSession(
        str(model_dir / manifest["model_file"]), options, providers=providers
    )
    names = {i.name for i in session.get_inputs()}
    tok = TextTokenizer(model_dir / manifest["tokenizer_file"], workload.max_length)
    seqs = [to_seq(e) for e in tok.encode(workload.texts)]
    reference = runtime_plan(workload, budget, device == "cuda")

    def prepare(mb: Chunk) -> dict[str, np.ndarray]:
        ids, mask, types, _ = collate([seqs[j] for j in mb], tok.pad_id)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {k: v for k, v in feeds.items() if k in names}

    session.run(None, prepare(list(range(8))))  # warm up
    return System(
        "ort-plain",
        manifest.get("precision", "fp32"),
        reference,
        prepare,
        run=lambda feeds: session.run(None, feeds),
    )


def runtime_plan(
    workload: Workload, budget: int = 8192, cuda: bool = False
) -> Callable[[Chunk], list[Chunk]]:
    """The server's micro-batch plan for a request (length-sorted, token budget, the device's
    padding bound)."""
    from types import SimpleNamespace

    from exasol_mlflow_server.runtime.batcher import padding_bound, plan_batches

    lengths = workload.tokens
    bound = padding_bound(SimpleNamespace(on_cuda=cuda))

    def plan(chunk: Chunk) -> list[Chunk]:
        planned = plan_batches([int(lengths[j]) for j in chunk], budget, bound)
        return [[chunk[i] for i in mb] for mb in planned]

    return plan


# ---- PyTorch / transformers baseline -------------------------------------------------------
def torch_system(
    source_dir: Path, task: str, workload: Workload, threads: int, device: str
) -> System:
    import torch
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(source_dir)
    cls = AutoModel if task == "feature-extraction" else AutoModelForSequenceClassification
    model = cls.from_pretrained(source_dir).eval()
    dev = torch.device("cuda" if device == "cuda" else "cpu")
    model.to(dev)

    def run(texts: Sequence[str]) -> None:
        enc = tok(
            list(texts),
            padding=True,
            truncation=True,
            max_length=workload.max_length,
            return_tensors="pt",
        ).to(dev)
        with torch.inference_mode():
            out = model(**enc)
            if task == "feature-extraction":  # sentence-transformers: mean pooling + L2 norm
                mask = enc["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
                pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                result = torch.nn.functional.normalize(pooled, dim=-1)
            else:
                result = out.logits.softmax(-1)
            result.cpu().numpy()

    run(workload.texts[:8])  # warm up
    return System(
        "torch",
        "fp32",
        plan=lambda chunk: [chunk],
        prepare=lambda mb: [workload.texts[j] for j in mb],
        run=run,
    )


def make(kind: str, **kwargs: Any) -> System:
    return {"runtime": runtime_system, "ort-plain": plain_ort_system, "torch": torch_system}[kind](
        **kwargs
    )
