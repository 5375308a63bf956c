"""Compose and run the server: waitress + the Falcon app + a model loaded in the background.

The port is open at once; ``/ping`` answers 503 until the model is loaded and a warm-up
inference succeeded. SIGTERM/SIGINT stop accepting connections, let in-flight requests finish,
then exit 0. ``--workers N`` runs N such processes on one port (SO_REUSEPORT).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import waitress
from waitress import wasyncore

from .. import __version__
from .batcher import Batcher
from .errors import ModelLoadError
from .generation.scheduler import CPU_TOKEN_BUDGET, CUDA_TOKEN_BUDGET, Scheduler
from .http.app import create_app
from .logs import configure_logging
from .metrics import Metrics
from .mlflow_uri import identity_of
from .model import LoadedModel, load_model
from .pipeline import Pipeline
from .reload import AliasReloader, start_reloader, swap_in
from .result_cache import ResultCache
from .settings import Settings, configure_process
from .state import ModelState
from .tasks.base import TaskOptions

log = logging.getLogger("exasol_mlflow_server")


def make_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port and hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ModelLoadError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(1024)
    return sock


def build_pipeline(model: LoadedModel, settings: Settings, metrics: Metrics) -> Pipeline:
    cache = ResultCache(settings.result_cache_bytes())
    if model.lm is not None:  # generative: its own decoding thread, step-level batching
        budget = CUDA_TOKEN_BUDGET if model.runner.on_cuda else CPU_TOKEN_BUDGET
        return Pipeline(model, Scheduler(model.lm, budget, settings.max_queued_rows), cache=cache)
    batcher = Batcher(
        model.run_batch,
        max_batch_tokens=settings.batch_token_budget(model.runner),
        max_delay_s=settings.max_batch_delay_ms / 1000.0,
        max_queued_rows=settings.max_queued_rows,
        on_batch=metrics.on_batch,
    )
    return Pipeline(model, batcher, cache=cache)


def load_and_warm(model_dir: Path, settings: Settings, metrics: Metrics) -> Pipeline:
    model = load_model(
        model_dir,
        device=settings.device,
        threads=settings.intra_op_threads(),
        max_length=settings.max_length,
        backend=settings.backend,
        cache_dir=settings.compiled_cache_dir(),
        options=TaskOptions(
            label_only=settings.label_only,
            max_new_tokens_limit=settings.max_new_tokens_limit,
            max_input_tokens=settings.max_input_tokens,
        ),
    )
    pipeline = build_pipeline(model, settings, metrics)
    try:
        pipeline.warm_up()
    except Exception:
        pipeline.close()
        raise
    return pipeline


def startup_block(pipeline: Pipeline, settings: Settings, port: int, worker: int | None) -> str:
    info = pipeline.model.describe()
    quant = pipeline.model.manifest.quantization or {}
    precision = info["precision"] + (f" (dynamic, preset {quant.get('preset')})" if quant else "")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    budget = settings.batch_token_budget(pipeline.model.runner)
    lines = [
        f"exasol-mlflow-server {__version__} ready"
        + (f" (worker {worker})" if worker is not None else ""),
        f"  model      {info['path']}",
        f"  task       {info['task']}",
        f"  precision  {precision}",
        f"  backend    {info['backend']} ({info['provider']}, computes in {info['compute_precision']})",
        f"  provider   {info['provider']}",
        f"  threads    {info['threads']} ONNX Runtime intra-op, {settings.http_threads} HTTP",
        f"  batching   {budget} tokens per batch, {settings.max_batch_delay_ms:g} ms max delay, "
        f"{settings.max_queued_rows} rows queued max",
        f"  auth       {'bearer token required' if settings.bearer_token() else 'off'}",
        f"  url        http://{host}:{port}/invocations",
    ]
    return "\n".join(lines)


class _Graceful:
    """SIGTERM/SIGINT: stop accepting, wait for in-flight requests, then close the loop."""

    def __init__(self, server: Any, inflight: list[int], timeout: float) -> None:
        self.server, self.inflight, self.timeout = server, inflight, timeout
        self.stopping = False

    def __call__(self, signum: int, frame: Any) -> None:
        if self.stopping:  # a second signal: stop now
            raise SystemExit(0)
        self.stopping = True
        log.info(
            "received %s: finishing in-flight requests, then exiting", signal.Signals(signum).name
        )
        # Never touch sockets inside the signal handler (the loop may be about to select() on
        # them): a thread asks the loop itself, through waitress's trigger, to do it.
        threading.Thread(target=self._drain, name="shutdown", daemon=True).start()

    def _drain(self) -> None:
        self.server.trigger.pull_trigger(
            lambda: wasyncore.dispatcher.close(self.server)
        )  # stop accepting
        deadline = time.monotonic() + self.timeout
        dispatcher = self.server.task_dispatcher
        while time.monotonic() < deadline and (
            self.inflight[0] > 0 or dispatcher.queue or dispatcher.active_count
        ):
            time.sleep(0.02)
        channels = [c for c in list(self.server._map.values()) if hasattr(c, "total_outbufs_len")]
        while time.monotonic() < deadline and any(
            c.total_outbufs_len for c in channels if c.connected
        ):
            time.sleep(0.02)  # let the last responses reach their sockets
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self.server._map))


def run_worker(
    settings: Settings,
    model_dir: Path,
    sock: socket.socket | None = None,
    worker: int | None = None,
) -> int:
    """Serve in this process until SIGTERM/SIGINT. Returns the exit code."""
    configure_logging(settings.log_level, settings.log_format)
    configure_process()
    state = ModelState()
    metrics = Metrics(
        queue_depth=lambda: (
            getattr(state.current().executor, "queued_rows", 0) if state.ready else 0
        )
    )
    app = create_app(settings, state, metrics)
    inflight = [0]
    lock = threading.Lock()

    def counted_app(environ: dict, start_response: Any) -> Any:
        with lock:
            inflight[0] += 1
        try:
            return app(environ, start_response)
        finally:
            with lock:
                inflight[0] -= 1

    sock = sock or make_socket(settings.host, settings.port, reuse_port=False)
    port = sock.getsockname()[1]
    server = waitress.create_server(
        counted_app,
        sockets=[sock],
        threads=settings.http_threads,
        connection_limit=max(1000, settings.http_threads * 4),
        max_request_body_size=2 * settings.max_body_bytes + 1024,
        channel_timeout=max(120, int(settings.request_timeout) + 10),
        ident="exasol-mlflow-server",
        clear_untrusted_proxy_headers=True,
    )
    exit_code = [0]
    reloader: list[AliasReloader | None] = [None]

    def load() -> None:
        try:
            pipeline = load_and_warm(model_dir, settings, metrics)
        except Exception as exc:
            message = (
                exc.message if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            )
            log.error(
                "cannot serve %s: %s",
                model_dir,
                message,
                exc_info=not isinstance(exc, ModelLoadError),
            )
            exit_code[0] = 1
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
            return
        identity = identity_of(settings.model, model_dir)
        swap_in(state, metrics, pipeline, identity, retire_after=settings.request_timeout + 5.0)
        block = startup_block(pipeline, settings, port, worker)
        if identity.version is not None:
            block += f"\n  mlflow     {identity.uri} (version {identity.version})"
        print(block, flush=True)
        try:
            reloader[0] = start_reloader(
                settings, identity, state, metrics, lambda d: load_and_warm(d, settings, metrics)
            )
        except ModelLoadError as exc:
            log.warning("not watching %s for new versions: %s", settings.model, exc.message)

    loader = threading.Thread(target=load, name="model-loader", daemon=True)
    loader.start()
    graceful = _Graceful(server, inflight, settings.drain_timeout)
    signal.signal(signal.SIGTERM, graceful)
    signal.signal(signal.SIGINT, graceful)
    log.info("listening on %s:%d (model loading)", settings.host, port)
    server.run()
    if reloader[0] is not None:
        reloader[0].stop()
    server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
    if state.ready:
        state.current().close()
    log.info("stopped")
    return exit_code[0]


def _worker_main(settings: Settings, model_dir: str, worker: int) -> None:
    sock = make_socket(settings.host, settings.port, reuse_port=True)
    sys.exit(run_worker(settings, Path(model_dir), sock, worker))


def run_workers(settings: Settings, model_dir: Path) -> int:
    """``--workers N``: N processes, each with its own session and ``cores / N`` threads."""
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(settings, str(model_dir), i), name=f"worker-{i}")
        for i in range(settings.workers)
    ]
    for proc in procs:
        proc.start()

    def forward(signum: int, frame: Any) -> None:
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = []
    for proc in procs:
        proc.join()
        codes.append(proc.exitcode or 0)
    return max(codes, default=0)
