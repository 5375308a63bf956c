"""Compose and run one server process: waitress + the Falcon app + the models, loaded in the background.

Every model (``--model NAME=PATH_OR_URI``, repeatable; resolved before the port opens) gets its
own ONNX Runtime session, batcher and pipeline, and is loaded and warmed up in the background,
one after the other: ``/v2/health/live`` answers 200 at once, ``/v2/models/NAME/ready`` once that
model is warm, ``/ping`` and ``/v2/health/ready`` once every model is. A model that cannot be
loaded or warmed up at start fails the whole process (exit :data:`EXIT_LOAD_FAILED`): a replica
that serves only some of its models would pass its readiness probe and fail requests.

Threads: each model's session gets ``--threads`` intra-op threads (0 = usable CPUs / workers),
i.e. all of the worker's cores: one batch runs at a time per model, and a server rarely runs two
models flat out at once. ONNX Runtime's idle threads do not spin on CPU (``session.py``), so a busy
model loses little to an idle one and two busy models share the cores instead of burning them
spin-waiting (``scripts/measure_model_threads.py``).

SIGTERM/SIGINT drain (``drain.py``) and exit 0 within ``--drain-timeout``. ``--workers N`` is
``supervisor.py``.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from . import drain
from .batcher import Batcher, padding_bound
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
from .settings import ModelSpec, Settings, batch_schedulers, configure_process
from .state import Models, ModelState
from .tasks.base import TaskOptions

log = logging.getLogger("exasol_mlflow_server")
EXIT_LOAD_FAILED = 3  # a model could not be loaded or warmed up at start (no point restarting)


def make_socket(host: str, port: int, reuse_port: bool, listen: bool = True) -> socket.socket:
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
    if listen:
        sock.listen(1024)
    return sock


def build_pipeline(model: LoadedModel, settings: Settings, metrics: Metrics, name: str) -> Pipeline:
    cache = ResultCache(settings.result_cache_bytes())
    if model.lm is not None:  # generative: its own decoding thread, step-level batching
        budget = CUDA_TOKEN_BUDGET if model.runner.on_cuda else CPU_TOKEN_BUDGET
        return Pipeline(model, Scheduler(model.lm, budget, settings.max_queued_rows), cache=cache)
    budget = settings.batch_token_budget(model.runner)
    batcher = Batcher(
        model.run_batch,
        max_batch_tokens=budget,
        max_delay_s=settings.max_batch_delay_ms / 1000.0,
        max_queued_rows=settings.max_queued_rows,
        on_batch=metrics.batch_observer(name, budget),
        on_queue_wait=metrics.wait_observer(name),
        schedulers=batch_schedulers(model.runner),
        max_padding=padding_bound(model.runner),
    )
    return Pipeline(model, batcher, cache=cache)


def load_and_warm(model_dir: Path, settings: Settings, metrics: Metrics, name: str) -> Pipeline:
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
    pipeline = build_pipeline(model, settings, metrics, name)
    try:
        pipeline.warm_up()
    except Exception:
        pipeline.close()
        raise
    metrics.watch_queue(name, lambda: pipeline.executor.queued_rows)
    metrics.watch_cache(name, pipeline.cache)
    return pipeline


def startup_block(models: Models, settings: Settings, port: int, worker: int | None) -> str:
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    lines = [
        f"exasol-mlflow-server {__version__} ready"
        + (f" (worker {worker})" if worker is not None else "")
    ]
    for state in models:
        pipeline = state.current()
        info = pipeline.model.describe()
        quant = pipeline.model.manifest.quantization or {}
        precision = info["precision"] + (
            f" (dynamic, preset {quant.get('preset')})" if quant else ""
        )
        budget = settings.batch_token_budget(pipeline.model.runner)
        default = " (default: POST /invocations)" if state is models.default else ""
        lines += [
            f"  model      {state.name}{default}",
            f"  path       {info['path']}",
            f"  task       {info['task']}",
            f"  precision  {precision}",
            f"  backend    {info['backend']} ({info['provider']}, computes in "
            f"{info['compute_precision']})",
            f"  provider   {info['provider']}",
            f"  threads    {info['threads']} intra-op",
            f"  batching   {budget} tokens per batch, {settings.max_batch_delay_ms:g} ms max delay, "
            f"{settings.max_queued_rows} rows queued max",
        ]
        if state.version is not None:
            lines.append(f"  mlflow     {state.info.get('model_uri')} (version {state.version})")
        if len(models) > 1:
            lines.append(f"  url        http://{host}:{port}/models/{state.name}/invocations")
        lines.append(f"  oip        http://{host}:{port}/v2/models/{state.name}/infer")
    lines += [
        f"  http       {settings.http_threads} threads",
        f"  auth       {'bearer token required' if settings.bearer_token() else 'off'}",
        f"  url        http://{host}:{port}/invocations",
    ]
    return "\n".join(lines)


def run_worker(
    settings: Settings,
    served: Sequence[tuple[ModelSpec, Path]],
    sock: socket.socket | None = None,
    worker: int | None = None,
    metrics_dir: str | None = None,
    listen_when_ready: bool = False,
) -> int:
    """Serve in this process until SIGTERM/SIGINT. Returns the exit code.

    ``listen_when_ready``: accept connections only once every model is warm (a replacement
    worker, so that its siblings keep the traffic meanwhile instead of it answering 503).
    """
    configure_logging(settings.log_level, settings.log_format)
    configure_process()
    metrics = Metrics(metrics_dir)
    models = Models([ModelState(spec.name) for spec, _ in served])
    app = create_app(settings, models, metrics)
    sock = sock or make_socket(settings.host, settings.port, reuse_port=False)
    port = sock.getsockname()[1]
    server = drain.create_server(
        app,
        sock,
        listen=not listen_when_ready,
        threads=settings.http_threads,
        connection_limit=max(1000, settings.http_threads * 4),
        max_request_body_size=2 * settings.max_body_bytes + 1024,
        channel_timeout=max(120, int(settings.request_timeout) + 10),
        ident="exasol-mlflow-server",
        clear_untrusted_proxy_headers=True,
    )
    exit_code = [0]
    reloaders: list[AliasReloader] = []

    def load() -> None:
        for (spec, model_dir), state in zip(served, models, strict=True):
            try:
                pipeline = load_and_warm(model_dir, settings, metrics, spec.name)
            except Exception as exc:
                message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
                log.error(
                    "cannot serve %s (%s): %s",
                    spec.name,
                    model_dir,
                    message,
                    exc_info=not isinstance(exc, ModelLoadError),
                )
                exit_code[0] = EXIT_LOAD_FAILED
                drain.stop_now(server)
                return
            identity = identity_of(spec.source, model_dir)
            swap_in(state, metrics, pipeline, identity, retire_after=settings.request_timeout + 5.0)
            try:
                build = lambda d, name=spec.name: load_and_warm(d, settings, metrics, name)  # noqa: E731
                reloader = start_reloader(settings, identity, state, metrics, build)
            except ModelLoadError as exc:
                log.warning("not watching %s for new versions: %s", spec.source, exc.message)
            else:
                if reloader is not None:
                    reloaders.append(reloader)
        if listen_when_ready:
            drain.listen(server)
        print(startup_block(models, settings, port, worker), flush=True)

    threading.Thread(target=load, name="model-loader", daemon=True).start()
    drainer = drain.Drainer(
        server, settings.drain_timeout, on_begin=lambda: setattr(models, "draining", True)
    )
    drainer.install()
    metrics.start_refresher()
    log.info(
        "listening on %s:%d (loading %s)", settings.host, port, ", ".join(s.name for s, _ in served)
    )
    server.run()
    for reloader in reloaders:
        reloader.stop()
    metrics.stop()
    budget = drainer.remaining(default=5.0)
    closer = threading.Thread(target=models.close, name="close-models", daemon=True)
    closer.start()
    closer.join(budget)
    server.task_dispatcher.shutdown(cancel_pending=True, timeout=max(0.1, drainer.remaining(0.5)))
    log.info("stopped")
    return exit_code[0]
