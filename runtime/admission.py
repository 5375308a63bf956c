"""[admit] Admission before work: a request that the server cannot take gets its 503 before its
body is decoded or tokenized.

The bound is in rows held by the worker -- admitted and not yet answered, wherever they are
(decoding, tokenizing, queued, running, encoding) -- at most ``--max-queued-rows``. Rows, not
requests: a 1-row and a 1000-row request are not the same load, and rows are what the queue and
the model are sized in. A request is admitted in two steps:

1. :meth:`Admission.admit` with the body's size, before anything is parsed: the rows are
   *estimated* from the bytes (bytes per row learned from the requests decoded so far) and
   reserved; when the estimate does not fit beside the rows already held, the request is
   rejected at once with :class:`Overloaded` (cost: a few microseconds).
2. :meth:`Ticket.settle` with the exact row count, right after the (cheap) JSON decode and
   before tokenization: the reservation becomes exact; a request that does not fit is rejected
   there (it paid a decode, not a tokenization), and one larger than the whole bound is a
   :class:`BadRequest` (it could never run; split it).

The work that a rejected request would have cost is what admission saves: decoding and
tokenizing 500 rows takes tens of milliseconds of CPU, a 503 at step 1 microseconds (the
benchmark's overload section measures both). A server with nothing in flight admits any
request (its size is then checked exactly), so a large request is never starved by its own
estimate. ``release`` (or leaving the ``with`` block) returns the rows.
"""

from __future__ import annotations

import math
import threading
from types import TracebackType

from .errors import BadRequest, Overloaded

# Weight of the newest request in the learned bytes per row (an exponential moving average):
# a change of traffic shows within a few requests; one odd request moves it little.
EWMA_WEIGHT = 0.2


class Admission:
    """Thread-safe bound on the rows a worker holds; see the module docstring."""

    def __init__(self, max_rows: int, retry_after: int = 1) -> None:
        if max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        self.max_rows = max_rows
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._held = 0  # rows reserved by admitted, unfinished requests
        self._bytes_per_row: float | None = None  # learned from decoded requests
        self.rejected = 0  # 503s given (both steps)

    @property
    def held_rows(self) -> int:
        return self._held

    @property
    def bytes_per_row(self) -> float | None:
        return self._bytes_per_row

    def estimate(self, body_bytes: int) -> int:
        """Rows a body of ``body_bytes`` probably holds (0 before any request was decoded)."""
        per_row = self._bytes_per_row
        return 0 if not per_row else max(1, math.ceil(body_bytes / per_row))

    def admit(self, body_bytes: int) -> Ticket:
        """Step 1: reserve the estimated rows of a body, or raise :class:`Overloaded`."""
        with self._lock:
            rows = self.estimate(body_bytes)
            if self._held and self._held + rows > self.max_rows:
                self.rejected += 1
                raise self._overloaded(rows)
            self._held += rows
        return Ticket(self, body_bytes, rows)

    def _settle(self, ticket: Ticket, rows: int) -> None:
        if rows > self.max_rows:
            raise BadRequest(
                f"Invalid input. The request has {rows} rows, more than this server holds at "
                f"once ({self.max_rows}, --max-queued-rows); split it into smaller requests."
            )
        with self._lock:
            others = self._held - ticket.rows
            if others and others + rows > self.max_rows:
                self.rejected += 1
                raise self._overloaded(rows)
            self._held += rows - ticket.rows
            ticket.rows = rows
            sample = ticket.body_bytes / max(rows, 1)
            old = self._bytes_per_row
            self._bytes_per_row = sample if old is None else old + EWMA_WEIGHT * (sample - old)

    def _release(self, ticket: Ticket) -> None:
        with self._lock:
            self._held -= ticket.rows
            ticket.rows = 0

    def _overloaded(self, rows: int) -> Overloaded:
        return Overloaded(
            f"The server is overloaded: it holds {self._held} rows (limit {self.max_rows}, "
            f"--max-queued-rows) and this request brings about {rows}. Retry later.",
            retry_after=self.retry_after,
        )


class Ticket:
    """One admitted request's reservation; settle it once decoded, release it when answered."""

    __slots__ = ("_admission", "_released", "body_bytes", "rows")

    def __init__(self, admission: Admission, body_bytes: int, rows: int) -> None:
        self._admission = admission
        self.body_bytes = body_bytes
        self.rows = rows
        self._released = False

    def settle(self, rows: int) -> None:
        """Step 2: the exact row count; raises :class:`Overloaded` or :class:`BadRequest`
        (the reservation is then released)."""
        try:
            self._admission._settle(self, rows)
        except Exception:
            self.release()
            raise

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self)

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Admissions:
    """One :class:`Admission` per served model (each model has its own batch queue)."""

    def __init__(self, max_rows: int, retry_after: int = 1) -> None:
        self.max_rows, self.retry_after = max_rows, retry_after
        self._by_model: dict[str, Admission] = {}
        self._lock = threading.Lock()

    def admit(self, model: str, body_bytes: int | None) -> Ticket:
        """Step 1 for a request to ``model`` whose body has ``body_bytes`` (None: unknown)."""
        admission = self._by_model.get(model)
        if admission is None:
            with self._lock:
                admission = self._by_model.setdefault(
                    model, Admission(self.max_rows, self.retry_after)
                )
        return admission.admit(body_bytes or 0)
