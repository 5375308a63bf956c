"""Every Prometheus metric of the server, defined here, in our own registry (never the default).

Built on ``prometheus_client`` (imported by this module only). One process: the metric objects
live in :attr:`Metrics.registry`. ``--workers N``: prometheus_client's multiprocess mode -- the
supervisor makes a fresh directory and names it in ``PROMETHEUS_MULTIPROC_DIR`` before any of its
processes imports prometheus_client (:func:`~.settings.enable_multiprocess_metrics`); every
process writes its values to files there, and one scrape of any worker merges them all: counters
and histograms are summed over the workers, gauges as their ``multiprocess_mode`` says (``livesum``
for in-flight requests and queued rows, ``livemax`` for facts every worker shares).

Names: ``ems_requests_total{route,code,model}``, ``ems_rows_total{model}``,
``ems_errors_total{error_code,model}``, ``ems_request_duration_seconds{route,model}``,
``ems_inflight_requests``, ``ems_queue_rows{model}``, ``ems_queue_wait_seconds{model}``,
``ems_inference_duration_seconds{model}``, ``ems_batch_rows{model}``,
``ems_batch_padded_tokens{model}``, ``ems_batch_fill_ratio{model}`` (padded tokens / budget),
``ems_batch_token_budget{model}``, ``ems_result_cache_{hits,misses,evictions}_total{model}``,
``ems_result_cache_{bytes,entries}{model}``, ``ems_model_info{model,task,precision,provider,name,
version,alias,backend,compute}``, ``ems_model_reload_failures_total``, ``ems_worker_restarts_total``, ``ems_workers``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, values

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENCY_BUCKETS += (30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TOKEN_BUCKETS = (*SIZE_BUCKETS, 8192, 16384, 32768)
FILL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
REFRESH_S = 1.0  # how often a worker publishes its pulled gauges (queued rows) in multiprocess mode

prometheus_client.disable_created_metrics()  # no *_created series: they only add noise here


class Metrics:
    """Every metric of the server. ``multiprocess_dir``: the directory of multiprocess mode."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir and not getattr(values.ValueClass, "_multiprocess", False):
            raise RuntimeError(
                "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set"
            )
        self.registry = CollectorRegistry()
        reg = None if multiprocess_dir else self.registry  # multiprocess: values live in files
        self.requests = Counter(
            "ems_requests",
            "HTTP requests by route, status code and model",
            ("route", "code", "model"),
            registry=reg,
        )
        self.rows = Counter("ems_rows", "input rows predicted", ("model",), registry=reg)
        self.errors = Counter(
            "ems_errors",
            "failed requests by MLflow error code",
            ("error_code", "model"),
            registry=reg,
        )
        self.latency = Histogram(
            "ems_request_duration_seconds",
            "latency of inference requests",
            ("route", "model"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inflight = Gauge(
            "ems_inflight_requests",
            "HTTP requests being served",
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.queue_rows = Gauge(
            "ems_queue_rows",
            "rows waiting in the batch queue",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.queue_wait = Histogram(
            "ems_queue_wait_seconds",
            "time a row waited in the batch queue before its batch ran",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.inference = Histogram(
            "ems_inference_duration_seconds",
            "ONNX Runtime time per micro-batch",
            ("model",),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_rows = Histogram(
            "ems_batch_rows",
            "rows per micro-batch run by the model",
            ("model",),
            buckets=SIZE_BUCKETS,
            registry=reg,
        )
        self.batch_tokens = Histogram(
            "ems_batch_padded_tokens",
            "padded tokens (rows x longest row) per micro-batch",
            ("model",),
            buckets=TOKEN_BUCKETS,
            registry=reg,
        )
        self.batch_fill = Histogram(
            "ems_batch_fill_ratio",
            "padded tokens per micro-batch / the token budget",
            ("model",),
            buckets=FILL_BUCKETS,
            registry=reg,
        )
        self.batch_budget = Gauge(
            "ems_batch_token_budget",
            "token budget of one micro-batch",
            ("model",),
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.model_info = Gauge(
            "ems_model_info",
            "the models being served (1) and retired versions (0)",
            (
                "model",
                "task",
                "precision",
                "provider",
                "name",
                "version",
                "alias",
                "backend",
                "compute",
            ),
            multiprocess_mode="livemax",
            registry=reg,
        )
        self.cache_hits = Counter(
            "ems_result_cache_hits", "rows answered from the result cache", ("model",), registry=reg
        )
        self.cache_misses = Counter(
            "ems_result_cache_misses",
            "distinct rows the result cache did not hold (computed)",
            ("model",),
            registry=reg,
        )
        self.cache_evictions = Counter(
            "ems_result_cache_evictions",
            "results dropped from the cache to stay within --result-cache-mb",
            ("model",),
            registry=reg,
        )
        self.cache_bytes = Gauge(
            "ems_result_cache_bytes",
            "bytes held by the result cache (estimated)",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.cache_entries = Gauge(
            "ems_result_cache_entries",
            "results held by the result cache",
            ("model",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self.reload_failures = Counter(
            "ems_model_reload_failures",
            "failed attempts to load a new model version",
            registry=reg,
        )
        self.worker_restarts = Counter(
            "ems_worker_restarts",
            "worker processes replaced by the supervisor after dying",
            registry=reg,
        )
        self.workers = Gauge(
            "ems_workers",
            "worker processes alive (supervisor)",
            multiprocess_mode="livemax",
            registry=reg,
        )
        self._queues: dict[str, Callable[[], int]] = {}
        # model -> (the cache being served, its counters as last published)
        self._caches: dict[str, tuple[Any, tuple[int, int, int]]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()

    # ---- feeding ----------------------------------------------------------------------------
    def declare_model(self, model: str) -> None:
        """Create ``model``'s series at 0, so that they exist before its first request."""
        self.rows.labels(model)
        self.queue_rows.labels(model)
        for histogram in (self.queue_wait, self.inference, self.batch_rows, self.batch_tokens):
            histogram.labels(model)
        self.batch_fill.labels(model)

    def batch_observer(self, model: str, budget: int) -> Callable[[int, int, float], None]:
        """The batcher's ``on_batch(rows, padded_tokens, seconds)`` for ``model``."""
        rows, tokens, fill = (
            self.batch_rows.labels(model),
            self.batch_tokens.labels(model),
            self.batch_fill.labels(model),
        )
        inference = self.inference.labels(model)
        self.batch_budget.labels(model).set(budget)

        def on_batch(n: int, padded: int, seconds: float) -> None:
            rows.observe(n)
            tokens.observe(padded)
            fill.observe(padded / budget if budget else 0.0)
            inference.observe(seconds)

        return on_batch

    def wait_observer(self, model: str) -> Callable[[Sequence[float]], None]:
        """The batcher's ``on_queue_wait(waits)``: each row's seconds in the queue."""
        histogram = self.queue_wait.labels(model)

        def on_wait(waits: Sequence[float]) -> None:
            for wait in waits:
                histogram.observe(wait)

        return on_wait

    def watch_queue(self, model: str, queued_rows: Callable[[], int]) -> None:
        """Publish ``queued_rows()`` as ``ems_queue_rows{model}`` (pulled at scrape / refresh)."""
        with self._lock:
            self._queues[model] = queued_rows
        self.refresh()

    def watch_cache(self, model: str, cache: Any) -> None:
        """Publish ``cache.stats()`` for ``model`` (a new version brings a new, empty cache)."""
        with self._lock:
            self._caches[model] = (cache, (0, 0, 0))
        self.refresh()

    def set_model_info(self, model: str, labels: Sequence[str], value: float) -> None:
        self.model_info.labels(model, *labels).set(value)

    def observe_request(
        self,
        route: str,
        code: int,
        model: str,
        seconds: float,
        rows: int = 0,
        error_code: str | None = None,
        inference: bool = False,
    ) -> None:
        """One HTTP request; ``inference``: an inference route (latency and rows are counted)."""
        self.requests.labels(route, str(code), model).inc()
        if error_code:
            self.errors.labels(error_code, model).inc()
        if inference:
            self.latency.labels(route, model).observe(seconds)
            if rows and code < 400:
                self.rows.labels(model).inc(rows)

    # ---- exposition -------------------------------------------------------------------------
    def refresh(self) -> None:
        with self._lock:
            queues = list(self._queues.items())
            caches = list(self._caches.items())
        for model, queued in queues:
            self.queue_rows.labels(model).set(queued())
        for model, (cache, seen) in caches:
            stats = cache.stats()
            now = (stats.hits, stats.misses, stats.evictions)
            for counter, old, new in zip(
                (self.cache_hits, self.cache_misses, self.cache_evictions), seen, now, strict=True
            ):
                if new > old:
                    counter.labels(model).inc(new - old)
            self.cache_bytes.labels(model).set(stats.bytes)
            self.cache_entries.labels(model).set(stats.entries)
            with self._lock:
                if self._caches.get(model, (None,))[0] is cache:
                    self._caches[model] = (cache, now)

    def start_refresher(self) -> None:
        """Multiprocess mode: publish pulled gauges every second (a scrape reads other workers)."""
        if not self.multiprocess_dir:
            return

        def loop() -> None:
            while not self._stop.wait(REFRESH_S):
                self.refresh()

        threading.Thread(target=loop, name="metrics-refresh", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def render(self) -> bytes:
        """The text exposition format; in multiprocess mode, merged over every process."""
        self.refresh()
        if not self.multiprocess_dir:
            return prometheus_client.generate_latest(self.registry)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, self.multiprocess_dir)
        return prometheus_client.generate_latest(merged)


def mark_process_dead(pid: int, multiprocess_dir: str) -> None:
    """Forget a dead worker's live gauges (its counters and histograms stay in the sums)."""
    multiprocess.mark_process_dead(pid, multiprocess_dir)
