"""The request path in one place: decode -> tokenize -> batch -> run -> post-process -> encode."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .batcher import Batcher, DirectExecutor
from .generation.scheduler import DirectGenerator, Scheduler
from .model import LoadedModel
from .protocol import Payload, decode, encode_predictions
from .settings import CPU_BATCH_TOKENS
from .tokenize import Seq, collate


class Pipeline:
    """Runs a loaded model; ``executor`` is a :class:`Batcher` (server) or :class:`DirectExecutor`."""

    def __init__(
        self,
        model: LoadedModel,
        executor: Batcher | DirectExecutor | Scheduler | DirectGenerator | None = None,
        budget: int = CPU_BATCH_TOKENS,
    ) -> None:
        self.model = model
        self.task = model.task
        if executor is None:
            executor = (
                DirectGenerator(model.lm) if model.lm else DirectExecutor(self.run_batch, budget)
            )
        self.executor = executor

    def run_batch(self, seqs: Sequence[Seq]) -> list[Any]:
        """[run] + [reduce] one micro-batch (called by the executor)."""
        ids, mask, types, lengths = collate(seqs, self.model.tokenizer.pad_id)
        outputs = self.model.runner.run(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
            list(self.task.outputs),
        )
        outputs["input_ids"] = ids  # lets a task pick positions (fill-mask: the mask tokens)
        return self.task.reduce(outputs, lengths)

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
