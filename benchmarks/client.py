"""A load generator that behaves like Exasol UDF instances calling a scoring server.

Each client thread is one UDF instance: it opens its own HTTP/1.1 connection, keeps it alive,
and sends ``POST /invocations`` with ``{"inputs": [B texts]}`` one request at a time until its
share of the rows is done (or the cell's time cap passed; every client sends at least one
request). Bodies are encoded before the clock starts, so the client costs little CPU; the
process's CPU time during the cell is reported as the client's share of the machine (the
small-batch cells use ``wrk`` instead, see ``wrk.py``). With ``backoff`` a client that gets a 503
waits its ``Retry-After`` before the next request, as the UDF client does.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .workload import Workload

HEADERS = {"Content-Type": "application/json"}


@dataclass
class Request:
    body: bytes
    rows: list[int]


@dataclass(frozen=True)
class Endpoint:
    """Where a server takes rows and how it wants them: ours and MLflow's ``POST /invocations
    {"inputs": [...]}``, infinity-emb's OpenAI-style ``POST /embeddings {"input": [...]}``."""

    path: str = "/invocations"
    key: str = "inputs"
    extra: tuple[tuple[str, Any], ...] = ()

    def body(self, texts: list[str], params: dict[str, Any] | None = None) -> bytes:
        payload: dict[str, Any] = {**dict(self.extra), self.key: texts}
        if params:
            payload["params"] = params
        return orjson.dumps(payload)

    def predictions(self, data: bytes) -> list[Any]:
        obj = orjson.loads(data)
        if "predictions" in obj:
            return obj["predictions"]
        return [item["embedding"] for item in sorted(obj["data"], key=lambda d: d["index"])]


INVOCATIONS = Endpoint()


@dataclass
class LoadResult:
    wall_s: float
    latencies_s: list[float]
    ok_rows: list[int]
    requests: int
    errors: int
    statuses: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0
    busy_latencies_s: list[float] = field(default_factory=list)  # of the 503 answers
    retry_after_s: list[float] = field(default_factory=list)  # their Retry-After values

    def stats(self, workload: Workload) -> dict[str, Any]:
        lat = np.array(self.latencies_s) * 1000.0 if self.latencies_s else np.array([np.nan])
        rows = len(self.ok_rows)
        wall = max(self.wall_s, 1e-9)
        flops = float(workload.flops[self.ok_rows].sum()) if rows else 0.0
        busy = np.array(self.busy_latencies_s) * 1000.0
        return {
            "client": "python",
            "client_cpu_s": round(self.client_cpu_s, 3),
            "busy_p50_ms": float(np.percentile(busy, 50)) if busy.size else None,
            "rows": rows,
            "requests": self.requests,
            "seconds": round(self.wall_s, 3),
            "rows_per_s": rows / wall,
            "tokens_per_s": float(workload.tokens[self.ok_rows].sum()) / wall if rows else 0.0,
            "flops_per_s": flops / wall,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "errors": self.errors,
            "statuses": self.statuses,
            "error_samples": self.error_samples,
        }


def build_requests(
    workload: Workload,
    total_rows: int,
    batch: int,
    params: dict[str, Any] | None = None,
    endpoint: Endpoint = INVOCATIONS,
    column: list[int] | None = None,
) -> list[Request]:
    """``total_rows`` rows cut into requests of ``batch`` rows: the pool's rows in order
    (wrapping around), or the row indices of ``column`` (a repeated column, say)."""
    out = []
    for start in range(0, total_rows, batch):
        count = min(batch, total_rows - start)
        if column is None:
            rows = workload.indices(start, count)
        else:
            rows = [column[(start + k) % len(column)] for k in range(count)]
        out.append(Request(endpoint.body([workload.texts[i] for i in rows], params), rows))
    return out


def split_clients(requests: list[Request], clients: int) -> list[list[Request]]:
    """Deal the requests round-robin: each client (UDF instance) gets its own share."""
    return [requests[c::clients] for c in range(clients)]


class _Conn:
    def __init__(self, port: int, timeout: float, path: str = "/invocations") -> None:
        self.port, self.timeout, self.path = port, timeout, path
        self.conn: http.client.HTTPConnection | None = None
        self.retry_after = 0.0  # of the last response

    def connect(self) -> None:
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            self.conn.connect()

    def post(self, body: bytes) -> tuple[int, bytes]:
        self.connect()
        assert self.conn is not None
        try:
            self.conn.request("POST", self.path, body, HEADERS)
            resp = self.conn.getresponse()
            data = resp.read()
            self.retry_after = float(resp.getheader("Retry-After") or 0)
        except (OSError, http.client.HTTPException):
            self.close()  # the next request reconnects, like a UDF retrying
            raise
        if resp.will_close:
            self.close()
        return resp.status, data

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def run_load(
    port: int,
    shares: list[list[Request]],
    time_cap_s: float,
    timeout_s: float = 300.0,
    path: str = "/invocations",
    backoff: bool = False,
    cycle: bool = False,
) -> LoadResult:
    """Run one cell: ``len(shares)`` concurrent clients, each sending its own requests in order.

    With ``backoff`` a client retries a 503'd request after its ``Retry-After`` (until the time
    cap); without, it moves on to its next request at once. With ``cycle`` a client starts its
    share again when it is through, until the time cap.
    """
    lock = threading.Lock()
    result = LoadResult(0.0, [], [], 0, 0)
    barrier = threading.Barrier(len(shares) + 1)
    start = [0.0]
    ends: list[float] = []

    def client(share: list[Request]) -> None:
        conn = _Conn(port, timeout_s, path)
        try:
            conn.connect()  # like a UDF instance: connected before its first row arrives
        except OSError:
            conn.close()  # the first post retries and records the error
        barrier.wait()
        queue = list(reversed(share))
        sent = 0
        while queue or cycle:
            if sent and time.perf_counter() - start[0] > time_cap_s:
                break
            if not queue:
                queue = list(reversed(share))
            req = queue.pop()
            sent += 1
            t0 = time.perf_counter()
            try:
                status, data = conn.post(req.body)
                err = None if status == 200 else f"HTTP {status}: {data[:300]!r}"
                key = str(status)
            except (OSError, http.client.HTTPException) as exc:
                status, err, key = 0, f"{type(exc).__name__}: {exc}", type(exc).__name__
            latency = time.perf_counter() - t0
            if backoff and status == 503:
                queue.append(req)  # the same rows again, after the server's Retry-After
            with lock:
                result.requests += 1
                if status == 503:
                    result.busy_latencies_s.append(latency)
                    result.retry_after_s.append(conn.retry_after)
                else:
                    result.latencies_s.append(latency)
                result.statuses[key] = result.statuses.get(key, 0) + 1
                if err is None:
                    result.ok_rows.extend(req.rows)
                else:
                    result.errors += 1
                    if len(result.error_samples) < 5:
                        result.error_samples.append(err)
            if backoff and status == 503:
                time.sleep(min(conn.retry_after or 1.0, 5.0))
        with lock:
            ends.append(time.perf_counter())
        conn.close()

    threads = [threading.Thread(target=client, args=(s,), daemon=True) for s in shares]
    for t in threads:
        t.start()
    cpu0 = time.process_time()
    start[0] = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    result.wall_s = (max(ends) if ends else time.perf_counter()) - start[0]
    result.client_cpu_s = time.process_time() - cpu0
    return result


def collect_predictions(
    port: int,
    texts: list[str],
    batch: int = 100,
    params: dict[str, Any] | None = None,
    endpoint: Endpoint = INVOCATIONS,
) -> list[Any]:
    """Every row's prediction from a server (one client), for quality comparisons."""
    conn = _Conn(port, 300.0, endpoint.path)
    out: list[Any] = []
    try:
        for i in range(0, len(texts), batch):
            status, data = conn.post(endpoint.body(texts[i : i + batch], params))
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:500]!r}")
            out.extend(endpoint.predictions(data))
    finally:
        conn.close()
    return out


def ping_latency(port: int, count: int = 300) -> float:
    """Median seconds of a trivial request (GET /ping) on a kept-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    try:
        for _ in range(count):
            t0 = time.perf_counter()
            conn.request("GET", "/ping")
            conn.getresponse().read()
            times.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return float(np.median(times))


def post_latencies(port: int, bodies: list[bytes]) -> list[float]:
    """Seconds of one ``POST /invocations`` per body, in order, on one kept-alive connection."""
    conn = _Conn(port, 60.0)
    times = []
    try:
        for body in bodies:
            t0 = time.perf_counter()
            status, data = conn.post(body)
            times.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:300]!r}")
    finally:
        conn.close()
    return times
