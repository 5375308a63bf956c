"""The request path in one place: decode -> [dedup/cache] -> tokenize -> batch -> run ->
post-process -> encode."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .admission import Ticket
from .batcher import DirectExecutor, Executor, padding_bound
from .generation.scheduler import DirectGenerator
from .model import LoadedModel
from .protocol import Payload, decode, encode_predictions
from .result_cache import MISSING, ResultCache, distinct_rows, row_keys
from .settings import CPU_BATCH_TOKENS

NO_CACHE = ResultCache(0)


class Pipeline:
    """Runs a loaded model through an :class:`~.batcher.Executor`: the server's ``Batcher``, or
    (the default) a :class:`~.batcher.DirectExecutor` that runs in the caller's thread."""

    def __init__(
        self,
        model: LoadedModel,
        executor: Executor | None = None,
        budget: int = CPU_BATCH_TOKENS,
        cache: ResultCache = NO_CACHE,
    ) -> None:
        self.model = model
        self.task = model.task
        if executor is None:
            executor = (
                DirectGenerator(model.lm)
                if model.lm
                else DirectExecutor(model.run_batch, budget, padding_bound(model.runner))
            )
        self.executor: Executor = executor
        self.cache = cache  # this model version's results (a new version, a new pipeline)

    def predict_payload(
        self, payload: Payload, deadline: float | None = None, ticket: Ticket | None = None
    ) -> tuple[Any, int]:
        """Predictions for a decoded payload, and the number of rows.

        Identical rows are computed once; with the result cache, only the rows it lacks are.
        An admission ``ticket`` is settled with the exact row count before any tokenization.
        """
        if ticket is not None:
            ticket.settle(payload.n_rows)
        columns = self.task.select(payload)
        params = self.task.parse_params(payload.params)
        if not self.task.shares_results(params):  # e.g. sampled generation: every row its own
            return self._compute(columns, params, deadline), payload.n_rows
        keys = row_keys(columns)
        first, inverse = distinct_rows(keys)
        if len(first) == len(keys) and not self.cache.enabled:  # nothing to share
            return self._compute(columns, params, deadline), payload.n_rows
        pkey = self.cache.params_key(params)
        found = self.cache.get_many(pkey, [keys[r] for r in first])
        todo = [slot for slot, value in enumerate(found) if value is MISSING]
        if todo:
            rows = [first[slot] for slot in todo]
            computed = self._compute(
                {name: [col[r] for r in rows] for name, col in columns.items()}, params, deadline
            )
            if isinstance(computed, np.ndarray):  # own copies: a cached row must not pin the batch
                computed = [np.array(row) for row in computed]
            for slot, value in zip(todo, computed, strict=True):
                found[slot] = value
            self.cache.put_many(pkey, [(keys[first[slot]], found[slot]) for slot in todo])
        out = [found[slot] for slot in inverse]
        if isinstance(out[0], np.ndarray):  # embeddings stay one array (orjson's fast path)
            return np.stack(out), payload.n_rows
        return out, payload.n_rows

    def _compute(
        self, columns: dict[str, list[Any]], params: dict[str, Any], deadline: float | None
    ) -> Any:
        """[tokenize] -> [batch] -> [run] -> [post-process] for these rows."""
        encoded = self.task.encode(columns, params)
        results = self.executor.execute(encoded.seqs, deadline)
        return self.task.decode(encoded, results, params)

    def invoke(
        self,
        body: bytes,
        content_type: str | None,
        timeout: float | None = None,
        ticket: Ticket | None = None,
    ) -> tuple[bytes, int]:
        """Bytes in, bytes out: the whole MLflow ``/invocations`` contract minus transport
        (``ticket``: the request's admission, see :mod:`.admission`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        payload = decode(body, content_type, self.task.list_columns())
        predictions, rows = self.predict_payload(payload, deadline, ticket)
        return encode_predictions(predictions), rows

    def warm_up(self) -> None:
        """One real inference before serving; it leaves nothing in the result cache."""
        payload = self.task.warmup_payload()
        columns = self.task.select(payload)
        self._compute(columns, self.task.parse_params(payload.params), None)

    def close(self) -> None:
        self.executor.close()
