"""Prometheus metrics in one registry owned by the app (text exposition format 0.0.4).

A tiny self-contained implementation (counters, gauges, histograms with labels) so the serving
side needs no extra dependency; every metric the server exports is defined in :class:`Metrics`.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable, Iterable

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    body = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + body + "}"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: tuple[str, ...] = ()) -> None:
        self.name, self.help, self.label_names = name, help_text, labels
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, *labels: str) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0.0) + amount

    def value(self, *labels: str) -> float:
        return self._values.get(labels, 0.0)

    def render(self) -> list[str]:
        lines = self.header()
        items = sorted(self._values.items()) or ([((), 0.0)] if not self.label_names else [])
        lines += [f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}" for k, v in items]
        return lines


class Gauge(_Metric):
    kind = "gauge"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...] = (),
        fn: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}
        self._fn = fn

    def set(self, value: float, *labels: str) -> None:
        with self._lock:
            self._values[labels] = value

    def render(self) -> list[str]:
        lines = self.header()
        if self._fn is not None:
            return [*lines, f"{self.name} {_fmt(self._fn())}"]
        lines += [
            f"{self.name}{_labels(self.label_names, k)} {_fmt(v)}"
            for k, v in sorted(self._values.items())
        ]
        return lines


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float]) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(buckets)
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    @property
    def count(self) -> int:
        return sum(self._counts)

    def render(self) -> list[str]:
        lines = self.header()
        cumulative = 0
        for bound, n in zip((*self.buckets, float("inf")), self._counts, strict=True):
            cumulative += n
            le = "+Inf" if bound == float("inf") else _fmt(bound)
            lines.append(f'{self.name}_bucket{{le="{le}"}} {cumulative}')
        lines += [f"{self.name}_sum {self._sum!r}", f"{self.name}_count {cumulative}"]
        return lines


class Metrics:
    """Every metric of the server."""

    def __init__(self, queue_depth: Callable[[], float] = lambda: 0.0) -> None:
        self.requests = Counter(
            "ems_requests_total", "HTTP requests by route and status code", ("route", "code")
        )
        self.rows = Counter("ems_rows_total", "input rows predicted")
        self.errors = Counter(
            "ems_errors_total", "failed requests by MLflow error code", ("error_code",)
        )
        self.latency = Histogram(
            "ems_request_duration_seconds", "request latency of /invocations", LATENCY_BUCKETS
        )
        self.batch_rows = Histogram(
            "ems_batch_rows", "rows per micro-batch run by the model", SIZE_BUCKETS
        )
        self.batch_tokens = Histogram(
            "ems_batch_padded_tokens",
            "padded tokens per micro-batch",
            (*SIZE_BUCKETS, 8192, 16384, 32768),
        )
        self.inference = Histogram(
            "ems_inference_duration_seconds", "ONNX Runtime time per micro-batch", LATENCY_BUCKETS
        )
        self.queue_depth = Gauge(
            "ems_queue_rows", "rows waiting in the batch queue", fn=queue_depth
        )
        self.model_info = Gauge(
            "ems_model_info",
            "the model being served",
            ("task", "precision", "provider", "name", "version", "alias"),
        )
        self.reload_failures = Counter(
            "ems_model_reload_failures_total", "failed attempts to load a new model version"
        )
        self._all = (
            self.requests,
            self.rows,
            self.errors,
            self.latency,
            self.batch_rows,
            self.batch_tokens,
            self.inference,
            self.queue_depth,
            self.model_info,
            self.reload_failures,
        )

    def on_batch(self, rows: int, padded_tokens: int, seconds: float) -> None:
        self.batch_rows.observe(rows)
        self.batch_tokens.observe(padded_tokens)
        self.inference.observe(seconds)

    def render(self) -> bytes:
        lines: list[str] = []
        for metric in self._all:
            lines += metric.render()
        return ("\n".join(lines) + "\n").encode()
