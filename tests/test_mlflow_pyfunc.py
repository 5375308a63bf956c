"""``mlflow.pyfunc.load_model(DIR)`` on every task's export, with MLflow's schema enforcement on:
it takes what MLflow's transformers flavor takes (a list of strings, a DataFrame, a dict) and
answers exactly what the server answers for the same rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from exasol_mlflow_server.runtime.model import load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import decode_object

mlflow = pytest.importorskip("mlflow")
pd = pytest.importorskip("pandas")

TEXTS = ["Exasol is an in-memory analytics database.", "I did not like the service at all."]
MASKED = ["Paris is the [MASK] of France.", "The [MASK] sat on the mat."]
LABELS = ["databases", "customer service", "weather"]
QA = {
    "question": ["Where is Exasol based?", "What is served?"],
    "context": ["Exasol is based in Nuremberg.", "The server serves ONNX models over HTTP."],
}

# task -> [(input as pyfunc gets it, params, the same rows as a server request body)]
CASES: dict[str, list[tuple[Any, dict, dict]]] = {
    "feature-extraction": [
        (TEXTS, {}, {"inputs": TEXTS}),
        (
            pd.DataFrame({"text": TEXTS}),
            {"normalize": False},
            {"inputs": TEXTS, "params": {"normalize": False}},
        ),
        ({"text": TEXTS[0]}, {}, {"inputs": TEXTS[:1]}),
    ],
    "text-classification": [
        (TEXTS, {}, {"inputs": TEXTS}),
        (pd.DataFrame({"text": TEXTS}), {"top_k": 2}, {"inputs": TEXTS, "params": {"top_k": 2}}),
        ({"text": TEXTS[1]}, {}, {"inputs": TEXTS[1:]}),
    ],
    "token-classification": [
        (TEXTS, {}, {"inputs": TEXTS}),
        (
            pd.DataFrame({"text": TEXTS}),
            {"aggregation_strategy": "simple"},
            {"inputs": TEXTS, "params": {"aggregation_strategy": "simple"}},
        ),
    ],
    "fill-mask": [
        (MASKED, {}, {"inputs": MASKED}),
        ({"text": MASKED[0]}, {"top_k": 2}, {"inputs": MASKED[:1], "params": {"top_k": 2}}),
    ],
    "question-answering": [
        (pd.DataFrame(QA), {}, {"inputs": QA}),
        (
            {"question": QA["question"][0], "context": QA["context"][0]},
            {"top_k": 2},
            {"inputs": {k: v[:1] for k, v in QA.items()}, "params": {"top_k": 2}},
        ),
        (
            [
                {"question": q, "context": c}
                for q, c in zip(QA["question"], QA["context"], strict=True)
            ],
            {},
            {"inputs": QA},
        ),
    ],
    "zero-shot-classification": [
        (
            pd.DataFrame({"text": TEXTS, "candidate_labels": [LABELS, LABELS]}),
            {},
            {"inputs": {"text": TEXTS, "candidate_labels": [LABELS, LABELS]}},
        ),
        (
            {"text": TEXTS[0], "candidate_labels": LABELS},
            {"multi_label": True},
            {
                "inputs": {"text": TEXTS[:1], "candidate_labels": [LABELS]},
                "params": {"multi_label": True},
            },
        ),
    ],
}


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return np.round(value.astype(np.float64), 5).tolist()
    if isinstance(value, pd.DataFrame):
        return _plain(value.to_dict(orient="records"))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    return value


@pytest.mark.parametrize("task", list(CASES))
def test_pyfunc_takes_what_the_transformers_flavor_takes(export_dir, task):
    model_dir = export_dir(task, "none")
    model = mlflow.pyfunc.load_model(str(model_dir))
    assert model.metadata.signature is not None  # so MLflow enforces the schema
    server = Pipeline(load_model(model_dir, threads=1))
    for data, params, body in CASES[task]:
        got = model.predict(data, params=params or None)
        payload = decode_object(body, server.task.list_columns())
        expected, _ = server.predict_payload(payload)
        assert _plain(got) == _plain(expected), (task, type(data).__name__)


def test_a_wrong_param_type_is_rejected_by_mlflow(export_dir):
    model = mlflow.pyfunc.load_model(str(export_dir("fill-mask", "none")))
    with pytest.raises(mlflow.exceptions.MlflowException):
        model.predict(MASKED, params={"top_k": "three"})
