"""MLflow ``python_function`` loader for exported directories.

``mlflow.pyfunc.load_model(DIR).predict(["text"])`` imports this module (named as
``loader_module`` in the MLmodel file) and calls :func:`_load_pyfunc`. It runs the same
pipeline as the server, synchronously, on the CPU or CUDA. mlflow is never imported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .model import load_model
from .pipeline import Pipeline
from .protocol import UNNAMED, Payload, decode_object
from .settings import available_cpus, default_batch_tokens


class OnnxPyfuncModel:
    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0) -> None:
        model = load_model(Path(path), device=device, threads=threads or available_cpus())
        self.pipeline = Pipeline(model, budget=default_batch_tokens(model.runner))

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        payload = to_payload(model_input, self.pipeline.task.list_columns())
        payload.params = dict(params or {})
        predictions, _ = self.pipeline.predict_payload(payload)
        return predictions


def to_payload(model_input: Any, list_columns: frozenset[str] = frozenset()) -> Payload:
    """Whatever pyfunc hands us (DataFrame, list, dict, ndarray, str) -> Payload."""
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - mlflow always brings pandas
        pd = None
    if pd is not None and isinstance(model_input, pd.DataFrame):
        columns = {
            str(c) if str(c) != "0" else UNNAMED: model_input[c].tolist()
            for c in model_input.columns
        }
        return Payload(columns, len(model_input))
    if pd is not None and isinstance(model_input, pd.Series):
        return Payload({UNNAMED: model_input.tolist()}, len(model_input))
    if hasattr(model_input, "tolist") and not isinstance(model_input, (str, bytes)):
        model_input = model_input.tolist()
    return decode_object({"inputs": model_input}, list_columns)


def _load_pyfunc(path: str) -> OnnxPyfuncModel:
    return OnnxPyfuncModel(path)
