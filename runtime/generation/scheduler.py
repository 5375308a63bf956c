"""[batch] Step-level batching of generation requests, one scheduler thread per model.

Request threads tokenize, build one :class:`~.batch.RowRequest` per input row and call
:meth:`Scheduler.execute`, which queues the rows (non-blocking admission against
``max_queued_rows``: a full queue answers :class:`Overloaded` at once) and waits with the
request's deadline. The scheduler thread owns the model and loops:

1. admit waiting rows, oldest first, while the rows being decoded reserve at most
   ``token_budget`` cache positions (each row reserves ``beams x (input + max_new_tokens)``),
   and prefill them as a new batch; a decoder-only batch joins the running batch at once (its
   cache is aligned by left padding), an encoder-decoder batch joins one at the same step or
   runs beside it;
2. run one decoding step of every running batch;
3. hand finished rows to their requests and drop them from the batch (cache freed); rows of a
   request that timed out are dropped before the next step (its waiter raised
   :class:`DeadlineExceeded`).

So a long generation never blocks new requests (they join between steps), memory is bounded
by the token budget and the queue bound, and a failing batch fails only its own requests.
``join=False`` gives static batches (new rows wait until the running batch is done), kept for
the batching measurement. :class:`DirectGenerator` runs the same batches synchronously.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from ..batcher import Job
from ..errors import (
    BadRequest,
    DeadlineExceeded,
    ModelFailure,
    Overloaded,
    ServingError,
    ShuttingDown,
)
from .batch import DecodeBatch, Member, RowRequest
from .model import CausalLM, Seq2SeqLM

log = logging.getLogger(__name__)

# Cache positions (rows x (input + new tokens)) decoded at once. On CPU, per-step time grows
# with the rows, so more rows mostly add latency; on CUDA big batches are nearly free.
SHUTTING_DOWN = "The server is shutting down; retry (on another server)."  # as the batcher says
CPU_TOKEN_BUDGET = 16384
CUDA_TOKEN_BUDGET = 262144


def _check(requests: Sequence[RowRequest], budget: int) -> None:
    for i, req in enumerate(requests):
        if req.tokens > budget:
            raise BadRequest(
                f"Invalid input. Row {i} needs {req.tokens} cache positions (num_beams x "
                f"(input + max_new_tokens)), more than this server decodes at once ({budget}); "
                "shorten the input, or lower max_new_tokens or num_beams."
            )


def _take(waiting: deque[Member], reserved: int, budget: int) -> list[Member]:
    """Waiting members (oldest first) that fit the budget; at least one when nothing runs."""
    members: list[Member] = []
    while waiting:
        member = waiting[0]
        if member.job.cancelled:
            waiting.popleft()
            continue
        if reserved + member.request.tokens > budget and (members or reserved):
            break
        reserved += member.request.tokens
        members.append(waiting.popleft())
    return members


class Scheduler:
    def __init__(
        self,
        model: CausalLM | Seq2SeqLM,
        token_budget: int = CPU_TOKEN_BUDGET,
        max_queued_rows: int = 20000,
        join: bool = True,
    ) -> None:
        self.model = model
        self.budget = token_budget
        self.max_queued = max_queued_rows
        self.join = join
        self._cond = threading.Condition()
        self._waiting: deque[Member] = deque()
        self._batches: list[DecodeBatch] = []
        self._closed = False
        self.steps = 0  # decoding steps run (for tests and metrics)
        self._thread = threading.Thread(target=self._loop, name="generation", daemon=True)
        self._thread.start()

    @property
    def queued_rows(self) -> int:
        return len(self._waiting)

    @property
    def active_rows(self) -> int:
        """Rows whose cache is held now."""
        return sum(b.rows.count for b in list(self._batches))

    def execute(self, requests: Sequence[RowRequest], deadline: float | None = None) -> list[Any]:
        _check(requests, self.budget)
        job = Job(len(requests))
        members = [Member(r, job, i) for i, r in enumerate(requests)]
        with self._cond:
            if self._closed:
                raise ShuttingDown(SHUTTING_DOWN)
            if len(self._waiting) + len(members) > self.max_queued:
                raise Overloaded(
                    f"The server is overloaded: {len(self._waiting)} rows wait for generation "
                    f"(limit {self.max_queued}). Retry later.",
                    retry_after=1,
                )
            self._waiting.extend(members)
            self._cond.notify()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not job.done.wait(timeout):
            with self._cond:
                job.cancelled = (
                    True  # the loop drops its rows (and their cache) before the next step
                )
            if not job.done.is_set():
                raise DeadlineExceeded("Request processing time exceeded limit.")
        if isinstance(job.error, ServingError):  # e.g. ShuttingDown: its own status, not a 500
            raise job.error
        if job.error is not None:
            raise ModelFailure(f"Generation failed: {job.error}") from job.error
        return job.results

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        for m in list(self._waiting) + [m for b in self._batches for m in b.members]:
            if not m.job.done.is_set():
                m.job.fail(ShuttingDown(SHUTTING_DOWN))

    # ---- scheduler side ---------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._waiting and not self._batches:
                    self._cond.wait()
                if self._closed:
                    return
                members: list[Member] = []
                if self.join or not self._batches:
                    reserved = sum(b.reserved for b in self._batches)
                    members = _take(self._waiting, reserved, self.budget)
            if members:
                self._start(members)
            for batch in self._batches:
                batch.drop_cancelled()
                try:
                    self._deliver(batch.step())
                except Exception as exc:  # a failing batch fails its own requests only
                    log.exception("generation failed for a batch of %d rows", batch.rows.count)
                    _fail(batch.members, exc)
                    batch.members = []
            self._batches = [b for b in self._batches if b.members]
            self.steps += 1

    def _start(self, members: list[Member]) -> None:
        try:
            batch = DecodeBatch(self.model, members)
        except Exception as exc:
            log.exception("generation failed for %d new rows", len(members))
            _fail(members, exc)
            return
        self._deliver(batch.finished)
        if not batch.members:
            return
        for running in self._batches:
            if running.merge(batch):
                return
        self._batches.append(batch)

    @staticmethod
    def _deliver(finished: list[Member]) -> None:
        for m in finished:
            if not m.job.cancelled:
                m.job.deliver(m.index, m.search.result())


def _fail(members: list[Member], exc: BaseException) -> None:
    for m in members:
        if not m.job.done.is_set():
            m.job.fail(exc)


class DirectGenerator:
    """The same batches, run to completion in the caller's thread (pyfunc, tests, export)."""

    def __init__(self, model: CausalLM | Seq2SeqLM, token_budget: int = CPU_TOKEN_BUDGET) -> None:
        self.model = model
        self.budget = token_budget
        self._lock = threading.Lock()

    def execute(self, requests: Sequence[RowRequest], deadline: float | None = None) -> list[Any]:
        _check(requests, self.budget)
        job = Job(len(requests))
        waiting = deque(Member(r, job, i) for i, r in enumerate(requests))
        with self._lock:
            while waiting:
                batch = DecodeBatch(self.model, _take(waiting, 0, self.budget))
                Scheduler._deliver(batch.finished)
                while batch.members:
                    if deadline is not None and time.monotonic() > deadline:
                        raise DeadlineExceeded("Request processing time exceeded limit.")
                    Scheduler._deliver(batch.step())
        return job.results

    def close(self) -> None:
        pass
