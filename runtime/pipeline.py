"""The request path in one place: decode -> tokenize -> batch -> run -> post-process -> encode."""

from __future__ import annotations

import time
from typing import Any

from .batcher import DirectExecutor, Executor
from .model import LoadedModel
from .protocol import Payload, decode, encode_predictions
from .settings import CPU_BATCH_TOKENS


class Pipeline:
    """Runs a loaded model through an :class:`~.batcher.Executor`: the server's ``Batcher``, or
    (the default) a :class:`~.batcher.DirectExecutor` that runs in the caller's thread."""

    def __init__(
        self, model: LoadedModel, executor: Executor | None = None, budget: int = CPU_BATCH_TOKENS
    ) -> None:
        self.model = model
        self.task = model.task
        self.executor: Executor = executor or DirectExecutor(model.run_batch, budget)

    def predict_payload(self, payload: Payload, deadline: float | None = None) -> tuple[Any, int]:
        """Predictions for a decoded payload, and the number of rows."""
        columns = self.task.select(payload)
        params = self.task.parse_params(payload.params)
        encoded = self.task.encode(columns, params)
        results = self.executor.execute(encoded.seqs, deadline)
        return self.task.decode(encoded, results, params), payload.n_rows

    def invoke(
        self, body: bytes, content_type: str | None, timeout: float | None = None
    ) -> tuple[bytes, int]:
        """Bytes in, bytes out: the whole MLflow ``/invocations`` contract minus transport."""
        deadline = None if timeout is None else time.monotonic() + timeout
        payload = decode(body, content_type, self.task.list_columns())
        predictions, rows = self.predict_payload(payload, deadline)
        return encode_predictions(predictions), rows

    def warm_up(self) -> None:
        self.predict_payload(self.task.warmup_payload())

    def close(self) -> None:
        self.executor.close()
