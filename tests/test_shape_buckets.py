"""CUDA shape buckets (``tokenize.bucket_shape``): the arithmetic, the collated arrays, and -- with
the buckets forced on the CPU, since no GPU runs here -- every encoder task's answers unchanged
by the padding rows and columns on real fp32 exports."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from exasol_mlflow_server.exporter.samples import builtin_samples
from exasol_mlflow_server.runtime.model import LoadedModel, load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload
from exasol_mlflow_server.runtime.tokenize import SEQ_BUCKET, bucket_shape, collate


@pytest.mark.parametrize(
    ("rows", "width", "max_width", "expected"),
    [
        (1, 1, 512, (1, 32)),
        (3, 32, 512, (4, 32)),
        (5, 33, 512, (8, 64)),
        (100, 77, 512, (128, 96)),
        (64, 500, 512, (64, 512)),
        (2, 250, 256, (2, 256)),  # capped at the model's longest input
        (2, 300, 256, (2, 300)),  # ... but never below the batch's own width
    ],
)
def test_bucket_shape(rows, width, max_width, expected):
    assert bucket_shape(rows, width, max_width) == expected


def test_collate_pads_rows_and_columns_to_the_bucket():
    seqs = [(np.arange(1, n + 1), None) for n in (3, 40, 7)]
    ids, mask, types, lengths = collate(seqs, pad_id=0, bucket_width=512)
    assert ids.shape == mask.shape == types.shape == (4, 2 * SEQ_BUCKET)
    assert lengths.tolist() == [3, 40, 7]
    assert mask.sum(axis=1).tolist() == [3, 40, 7, 1]  # a padding row is one pad token
    assert (ids[3] == 0).all()
    plain = collate(seqs, pad_id=0)
    assert plain[0].shape == (3, 40)
    assert (ids[:3, :40] == plain[0]).all() and (mask[:3, :40] == plain[1]).all()


ENCODER_TASKS = {
    "feature-extraction": {},
    "text-classification": {},
    "token-classification": {},
    "question-answering": {},
    "fill-mask": {},
    "zero-shot-classification": {"candidate_labels": ["sports", "politics", "technology"]},
}


def same(a: Any, b: Any, tol: float = 2e-4) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list | tuple | np.ndarray) and not isinstance(a, str):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float | np.floating):
        return math.isclose(float(a), float(b), rel_tol=tol, abs_tol=tol)
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("task", list(ENCODER_TASKS))
def test_bucketed_batches_answer_as_unbucketed(export_dir, task, monkeypatch):
    model = load_model(export_dir(task, "none"), device="cpu")
    samples = builtin_samples(task)[:7]  # 7 rows of different lengths: one padding row
    if task == "fill-mask":
        samples = [{"text": s["text"].rsplit(" ", 1)[0] + " [MASK]."} for s in samples]
    columns = {name: [s[name] for s in samples] for name in samples[0]}
    params = ENCODER_TASKS[task]

    def predict() -> Any:
        pipe = Pipeline(model, budget=100_000)  # one micro-batch
        try:
            return pipe.predict_payload(Payload(columns, len(samples), params))[0]
        finally:
            pipe.close()

    plain = predict()
    monkeypatch.setattr(LoadedModel, "bucket_width", property(lambda m: m.tokenizer.max_length))
    bucketed = predict()
    assert same(plain, bucketed), (task, plain, bucketed)
