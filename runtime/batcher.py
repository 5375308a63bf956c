r"""[batch] Cross-request dynamic batching.

Request threads tokenize their rows, then hand the sequences to :meth:`Batcher.execute`, which
puts them in one pool shared by all requests and waits (with the request's deadline) for the
results. Scheduler threads (one, or two on a multi-core CPU: one batch is collated and handed
back while the other runs) repeatedly take the *oldest* waiting sequence and pack around it the
waiting sequences of the most similar length (from any request) until the token budget (rows x
longest row) is reached, run that micro-batch, and hand every sequence's result back to its
request. So

* a batch closes on the token budget, or when the pool is drained, or -- when the model was
  idle -- after ``max_delay`` seconds of waiting for company;
* the oldest row always goes next (no starvation), and padding stays small (length sorting);
* the pool is bounded (``max_queued_rows``): a full pool answers :class:`Overloaded` at once
  (503 + Retry-After) instead of growing memory -- a backstop: the server admits requests
  before decoding them (``admission.py``), so its pool never gets that full;
* a request that times out is cancelled and its rows are dropped from the pool unrun;
* a failing batch fails exactly the requests that had rows in it; the loop survives;
* :meth:`Batcher.close` fails the queued requests at once (:class:`ShuttingDown`, 503) and lets
  the running batch finish.

:class:`DirectExecutor` runs the same micro-batches synchronously (pyfunc, tests, ceilings). Both
are :class:`Executor`\ s, which is all a :class:`~.pipeline.Pipeline` needs.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .errors import (
    BadRequest,
    DeadlineExceeded,
    ModelFailure,
    Overloaded,
    ServingError,
    ShuttingDown,
)
from .tokenize import Seq

log = logging.getLogger(__name__)

RunBatch = Callable[[Sequence[Seq]], list[Any]]


class Executor(Protocol):
    """Runs a request's token sequences, in micro-batches, and returns one result per sequence."""

    def execute(self, seqs: Sequence[Seq], deadline: float | None = None) -> list[Any]: ...

    def close(self) -> None: ...


class Job:
    """One request's rows (also the generation scheduler's): ``done`` is set when every row has
    its result or the request failed; ``cancelled`` tells the scheduler to drop its rows."""

    __slots__ = ("cancelled", "done", "error", "remaining", "results")

    def __init__(self, n: int) -> None:
        self.results: list[Any] = [None] * n
        self.remaining = n
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.cancelled = False

    def deliver(self, index: int, result: Any) -> None:
        self.results[index] = result
        self.remaining -= 1
        if self.remaining == 0:
            self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.cancelled = True  # its other rows are dropped unrun
        self.done.set()


class _Item:
    __slots__ = ("arrival", "index", "job", "key", "length", "seq", "taken")

    def __init__(self, job: Job, index: int, seq: Seq, seqno: int, arrival: float) -> None:
        self.job = job
        self.index = index
        self.seq = seq
        self.length = len(seq[0])
        self.key = (self.length, seqno)
        self.arrival = arrival
        self.taken = False


# A micro-batch may grow while its padded size (rows x longest row) stays within the token
# budget and padding stays under MAX_PADDING x the real tokens; only a batch smaller than
# PAD_FREE_SHARE of the budget may pad freely (4 tokens of ONNX Runtime's 512 on CPU, 16 of
# OpenVINO's 2048, 256 of CUDA's 32768: GPUs run small batches at the cost of one). Measured on
# CPU (MiniLM int8, in process through the batcher): padding is waste -- requests of 100 rows
# run 3-10% faster at 1.1 than at 1.25, and 16 clients x 1 row needed ~20% more CPU per row
# when batches up to 256 tokens could pad freely (55 vs 45 padded tokens per row) than with
# the bound applied to every batch, though the batches got smaller (2.1 vs 4.0 rows).
# On CUDA the bound is off (``max_padding=None``, see ``settings.padding_bound``): measured on an
# H200 (fp16 MiniLM), a run costs at least ~0.6 ms however small, about what ~850 more padded
# tokens cost, so splitting a request by length buys nothing there.
MAX_PADDING = 1.1
PAD_FREE_SHARE = 1 / 128


def padding_bound(runner: Any) -> float | None:
    """How much a runner's micro-batches may pad: :data:`MAX_PADDING` x their real tokens, or None
    (no bound but the token budget) on CUDA, where a run costs more than its padding."""
    return None if runner.on_cuda else MAX_PADDING


def fits(
    count: int, longest: int, real: int, budget: int, max_padding: float | None = MAX_PADDING
) -> bool:
    """May a batch of ``count`` rows, ``longest`` tokens wide, ``real`` tokens in all, run?"""
    padded = count * longest
    if padded > budget:
        return False
    return max_padding is None or padded <= budget * PAD_FREE_SHARE or padded <= max_padding * real


def plan_batches(
    lengths: Sequence[int], budget: int, max_padding: float | None = MAX_PADDING
) -> list[list[int]]:
    """Length-sorted micro-batches under the budget and padding bound (the synchronous path)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches: list[list[int]] = []
    current: list[int] = []
    real = 0
    for i in order:
        if current and not fits(
            len(current) + 1, lengths[i], real + lengths[i], budget, max_padding
        ):
            batches.append(current)
            current, real = [], 0
        current.append(i)
        real += lengths[i]
    if current:
        batches.append(current)
    return batches


class DirectExecutor:
    """Runs one request's sequences in length-sorted micro-batches, in the caller's thread."""

    def __init__(
        self, run_batch: RunBatch, max_batch_tokens: int, max_padding: float | None = MAX_PADDING
    ) -> None:
        self.run_batch = run_batch
        self.budget = max_batch_tokens
        self.max_padding = max_padding
        self._lock = threading.Lock()

    def execute(self, seqs: Sequence[Seq], deadline: float | None = None) -> list[Any]:
        results: list[Any] = [None] * len(seqs)
        with self._lock:
            for batch in plan_batches([len(s[0]) for s in seqs], self.budget, self.max_padding):
                for i, res in zip(batch, self.run_batch([seqs[i] for i in batch]), strict=True):
                    results[i] = res
        return results

    def close(self) -> None:
        pass


class Batcher:
    def __init__(
        self,
        run_batch: RunBatch,
        max_batch_tokens: int,
        max_delay_s: float = 0.001,
        max_queued_rows: int = 20000,
        on_batch: Callable[[int, int, float], None] | None = None,
        on_queue_wait: Callable[[list[float]], None] | None = None,
        schedulers: int = 1,
        max_padding: float | None = MAX_PADDING,
    ) -> None:
        self.run_batch = run_batch
        self.budget = max_batch_tokens
        self.max_padding = max_padding
        self.max_delay = max_delay_s
        self.max_queued = max_queued_rows
        self.on_batch = on_batch  # (rows, padded_tokens, seconds) -> None, for metrics
        self.on_queue_wait = on_queue_wait  # (each row's seconds in the queue) -> None
        self._cond = threading.Condition()
        self._keys: list[tuple[int, int]] = []  # sorted by (length, seqno), parallel to _items
        self._items: list[_Item] = []
        self._fifo: deque[_Item] = deque()
        self._seqno = itertools.count()
        self._queued = 0
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"batcher-{k}", daemon=True)
            for k in range(max(1, schedulers))
        ]
        for thread in self._threads:
            thread.start()

    # ---- request side -----------------------------------------------------------------
    @property
    def queued_rows(self) -> int:
        return self._queued

    def execute(self, seqs: Sequence[Seq], deadline: float | None = None) -> list[Any]:
        n = len(seqs)
        if n > self.max_queued:
            raise BadRequest(
                f"Invalid input. The request has {n} rows, more than this server's queue holds "
                f"({self.max_queued}, --max-queued-rows); split it into smaller requests."
            )
        job = Job(n)
        now = time.monotonic()
        with self._cond:
            if self._closed:
                raise ShuttingDown("The server is shutting down; retry (on another server).")
            if self._queued + n > self.max_queued:
                raise Overloaded(
                    f"The server is overloaded: {self._queued} rows are queued (limit {self.max_queued}). "
                    "Retry later.",
                    retry_after=1,
                )
            for i, seq in enumerate(seqs):
                item = _Item(job, i, seq, next(self._seqno), now)
                pos = bisect.bisect_left(self._keys, item.key)
                self._keys.insert(pos, item.key)
                self._items.insert(pos, item)
                self._fifo.append(item)
            self._queued += n
            self._cond.notify()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not job.done.wait(timeout):
            with self._cond:
                job.cancelled = True  # the scheduler drops its remaining rows unrun
            if not job.done.is_set():
                raise DeadlineExceeded("Request processing time exceeded limit.")
        if isinstance(job.error, ServingError):
            raise job.error
        if job.error is not None:
            raise ModelFailure(f"Inference failed: {job.error}") from job.error
        return job.results

    def close(self, timeout: float = 5.0) -> None:
        """Stop: queued requests fail at once with :class:`ShuttingDown`; the running batch ends."""
        with self._cond:
            self._closed = True
            error = ShuttingDown("The server is shutting down; retry (on another server).")
            for item in self._items:
                if not item.job.done.is_set():
                    item.job.fail(error)
            self._keys.clear()
            self._items.clear()
            self._fifo.clear()
            self._queued = 0
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    # ---- scheduler side ---------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._run(batch)

    def _oldest(self) -> _Item | None:
        while self._fifo:
            item = self._fifo[0]
            if item.taken:
                self._fifo.popleft()
            elif item.job.cancelled:
                self._drop(item)
            else:
                return item
        return None

    def _drop(self, item: _Item) -> None:
        pos = bisect.bisect_left(self._keys, item.key)
        del self._keys[pos]
        del self._items[pos]
        item.taken = True
        self._queued -= 1

    def _next_batch(self) -> list[_Item] | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                anchor = self._oldest()
                if anchor is None:
                    self._cond.wait()
                    continue
                wait = anchor.arrival + self.max_delay - time.monotonic()
                if wait > 0 and self._keys[-1][0] * len(self._keys) < self.budget:
                    self._cond.wait(wait)  # idle model: give other requests a moment to join
                    continue
                return self._take_window(anchor)

    def _take_window(self, anchor: _Item) -> list[_Item]:
        """Take the anchor plus its nearest-length neighbours while :func:`fits` allows."""
        items = self._items
        lo = bisect.bisect_left(self._keys, anchor.key)
        hi = lo + 1
        longest, count, real = anchor.length, 1, anchor.length
        while True:
            options = []
            if lo > 0:  # shorter (or equal) rows never raise the padded width
                cand = items[lo - 1]
                if cand.job.cancelled or fits(
                    count + 1, longest, real + cand.length, self.budget, self.max_padding
                ):
                    options.append((anchor.length - cand.length, -1, cand))
            if hi < len(items):
                cand = items[hi]
                width = max(longest, cand.length)
                if cand.job.cancelled or fits(
                    count + 1, width, real + cand.length, self.budget, self.max_padding
                ):
                    options.append((cand.length - anchor.length, 1, cand))
            if not options:
                break
            _, side, cand = min(options, key=lambda o: (o[0], o[1]))
            if side < 0:
                lo -= 1
            else:
                hi += 1
            if not cand.job.cancelled:
                longest = max(longest, cand.length)
                count += 1
                real += cand.length
        window = items[lo:hi]
        del self._keys[lo:hi]
        del items[lo:hi]
        for item in window:
            item.taken = True
        self._queued -= len(window)
        return [item for item in window if not item.job.cancelled]

    def _run(self, batch: list[_Item]) -> None:
        if not batch:
            return
        if self.on_queue_wait is not None:
            now = time.monotonic()
            self.on_queue_wait([now - item.arrival for item in batch])
        start = time.perf_counter()
        try:
            results = self.run_batch([item.seq for item in batch])
        except Exception as exc:  # a bad batch fails its own requests only; the loop goes on
            log.exception("inference failed for a batch of %d rows", len(batch))
            with self._cond:
                for job in {id(item.job): item.job for item in batch}.values():
                    job.fail(exc)  # its other rows are dropped from the pool
            return
        elapsed = time.perf_counter() - start
        if self.on_batch is not None:
            self.on_batch(len(batch), max(i.length for i in batch) * len(batch), elapsed)
        with self._cond:  # another scheduler may be finishing rows of the same request
            for item, res in zip(batch, results, strict=True):
                item.job.deliver(item.index, res)
