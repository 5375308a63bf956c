"""Quality report: the exported ONNX model vs the original PyTorch model on a validation set.

Both run batch by batch on identical tokenizer output; per task we compare the raw output tensor
(max abs diff over real, non-padding positions) and the task's decision (pooled embedding cosine,
argmax label, token labels, answer span, masked-token prediction). For INT8/fp16 exports the
fp32 ONNX export is compared as well. A small speed comparison (rows/s) comes for free.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from exasol_mlflow_server.exporter.progress import native_stderr_silenced
from exasol_mlflow_server.runtime.tasks import task_spec

# SPEC.quality.compare kinds whose outputs are per token (padding positions are ignored)
TOKEN_LEVEL = ("pooled_cosine", "token_argmax", "span_argmax")


def primary_metric(task: str) -> str:
    """The task's primary quality metric (the ``--min-quality`` gate), from its SPEC."""
    return task_spec(task).quality.metric


@dataclass
class _Compare:
    """Running comparison of two runners' outputs, as the task's ``SPEC.quality.compare`` says."""

    compare: str
    metric: str
    pooling: str
    max_abs_diff: float = 0.0
    cosines: list[np.ndarray] = field(default_factory=list)
    agree: list[np.ndarray] = field(default_factory=list)
    agree_end: list[np.ndarray] = field(default_factory=list)

    def update(self, a: dict[str, np.ndarray], b: dict[str, np.ndarray], mask: np.ndarray) -> None:
        valid = mask.astype(bool)
        for name, x in a.items():
            y = b[name].astype(np.float32)
            diff = np.abs(x.astype(np.float32) - y)
            if self.compare in TOKEN_LEVEL:  # per-token outputs: ignore padding positions
                diff = diff[valid]
            if diff.size:
                self.max_abs_diff = max(self.max_abs_diff, float(np.nanmax(diff)))
        if self.compare == "pooled_cosine":
            pa, pb = (_pool(o["last_hidden_state"], mask, self.pooling) for o in (a, b))
            self.cosines.append(np.sum(pa * pb, axis=1))
        elif self.compare in ("argmax", "masked_argmax"):  # masked: logits at the mask positions
            self.agree.append(a["logits"].argmax(-1) == b["logits"].argmax(-1))
        elif self.compare == "token_argmax":
            self.agree.append((a["logits"].argmax(-1) == b["logits"].argmax(-1))[valid])
        elif self.compare == "span_argmax":
            for key, sink in (("start_logits", self.agree), ("end_logits", self.agree_end)):
                xa = np.where(valid, a[key], -np.inf).argmax(-1)
                xb = np.where(valid, b[key], -np.inf).argmax(-1)
                sink.append(xa == xb)
        else:
            raise ValueError(f"unknown quality comparison {self.compare!r}")

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {"max_abs_diff": round(self.max_abs_diff, 6)}
        if self.cosines:
            cos = np.concatenate(self.cosines)
            out.update(
                cosine_mean=round(float(cos.mean()), 6), cosine_min=round(float(cos.min()), 6)
            )
        if self.compare == "span_argmax":
            start, end = np.concatenate(self.agree), np.concatenate(self.agree_end)
            out.update(
                start_agreement=_frac(start),
                end_agreement=_frac(end),
                answer_agreement=_frac(start & end),
            )
        elif self.agree:
            out[self.metric] = _frac(np.concatenate(self.agree))
        return out


def _frac(values: np.ndarray) -> float:
    return round(float(values.mean()), 6) if values.size else 1.0


def _pool(hidden: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    hidden = hidden.astype(np.float32)
    m = mask[..., None].astype(np.float32)
    if mode == "cls":
        vec = hidden[:, 0]
    elif mode == "max":
        vec = np.where(m > 0, hidden, -np.inf).max(axis=1)
    elif mode == "lasttoken":
        vec = hidden[np.arange(len(hidden)), mask.sum(axis=1) - 1]
    else:
        vec = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
    return vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)


def encode_batches(
    tokenizer: Any, task: str, samples: list[dict[str, str]], max_length: int, batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        kwargs = {"padding": True, "max_length": max_length, "return_tensors": "np"}
        spec = task_spec(task)
        if len(spec.required_columns) == 2:  # question + context: truncate the context only
            first, second = (c.name for c in spec.required_columns)
            enc = tokenizer(
                [s[first] for s in chunk],
                [s[second] for s in chunk],
                truncation="only_second",
                **kwargs,
            )
        elif any("text_pair" in s for s in chunk):
            enc = tokenizer(
                [s["text"] for s in chunk],
                [s.get("text_pair", "") for s in chunk],
                truncation=True,
                **kwargs,
            )
        elif spec.quality.compare == "masked_argmax":
            enc = tokenizer(
                [_with_mask(s["text"], tokenizer.mask_token) for s in chunk],
                truncation=True,
                **kwargs,
            )
        else:
            enc = tokenizer([s["text"] for s in chunk], truncation=True, **kwargs)
        yield {k: np.asarray(v).astype(np.int64) for k, v in enc.items()}


def _with_mask(text: str, mask_token: str) -> str:
    if mask_token in text:
        return text
    words = text.split()
    words[len(words) // 2] = mask_token
    return " ".join(words)


def torch_runner(model: Any) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    import torch

    accepted = set(inspect.signature(model.forward).parameters)

    def run(enc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(**{k: torch.from_numpy(v) for k, v in enc.items() if k in accepted})
        return {
            k: v.detach().float().numpy() for k, v in out.items() if isinstance(v, torch.Tensor)
        }

    return run


def onnx_session(path: Path, prefer_cuda: bool) -> tuple[Any, str]:
    """A session for ``path``: CUDA when asked for and it really loads, else CPU."""
    import onnxruntime as ort

    if prefer_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            # onnxruntime-gpu lists CUDA even where its libraries are missing and then logs an
            # error from C++ while falling back; keep that out of the user's terminal.
            with native_stderr_silenced():
                session = ort.InferenceSession(
                    str(path), providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
                )
            if session.get_providers()[0] == "CUDAExecutionProvider":
                return session, "CUDAExecutionProvider"
        except Exception:
            pass
    return ort.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    ), "CPUExecutionProvider"


def serving_runner(
    path: Path, precision: str
) -> tuple[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] | None:
    """The engine `serve --backend auto` would use, when it is not ONNX Runtime on this CPU
    (OpenVINO bf16 for an fp32 export on a CPU with native bf16), as ``(label, run)``."""
    from exasol_mlflow_server.runtime.backends import choose_backend

    if choose_backend("auto", "cpu", precision) != "openvino":
        return None
    from exasol_mlflow_server.runtime.openvino_session import OpenVinoRunner

    runner = OpenVinoRunner(path, threads=0, precision="auto")
    return f"openvino {runner.precision}", lambda enc: runner.run(enc)


def onnx_runner(session: Any) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]

    def run(enc: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {n: enc[n] if n in enc else np.zeros_like(enc["input_ids"]) for n in names}
        return dict(zip(outputs, session.run(outputs, feed), strict=True))

    return run


def _reduce(
    task: str, out: dict[str, np.ndarray], enc: dict[str, np.ndarray], mask_id: int | None
) -> dict[str, np.ndarray]:
    """Keep what the comparison needs (masked tasks: only the logits at the mask positions)."""
    if task_spec(task).quality.compare == "masked_argmax":
        where = enc["input_ids"] == mask_id
        return {"logits": out["logits"][where]}
    return out


def measure(
    task: str,
    runners: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]],
    pairs: list[tuple[str, str]],
    batches: list[dict[str, np.ndarray]],
    pooling: str,
    mask_id: int | None,
) -> tuple[dict[tuple[str, str], dict[str, float]], dict[str, float]]:
    """Run every runner on every batch and compare each (reference, candidate) pair.

    Returns the metrics per pair and each runner's throughput in rows/s (after one warm-up batch).
    """
    quality = task_spec(task).quality
    comparisons = {pair: _Compare(quality.compare, quality.metric, pooling) for pair in pairs}
    seconds = dict.fromkeys(runners, 0.0)
    for run in runners.values():  # warm-up, untimed
        run(batches[0])
    rows = 0
    for enc in batches:
        rows += len(enc["input_ids"])
        outputs = {}
        for name, run in runners.items():
            t0 = time.perf_counter()
            out = run(enc)
            seconds[name] += time.perf_counter() - t0
            outputs[name] = _reduce(task, out, enc, mask_id)
        for (ref, cand), cmp in comparisons.items():
            mine = outputs[cand]
            cmp.update({k: outputs[ref][k] for k in mine}, mine, enc["attention_mask"])
    speed = {name: round(rows / max(sec, 1e-9), 1) for name, sec in seconds.items()}
    return {pair: cmp.result() for pair, cmp in comparisons.items()}, speed
