"""Roll to a new model version without dropping a request.

For every served model given as ``models:/NAME@ALIAS`` (when ``--reload-interval`` is > 0), an
:class:`AliasReloader` thread of its own asks the registry every interval where the alias points. When it
moved, the new version is fetched, exported if needed, loaded and warmed up in that thread while
the old version keeps serving; then :func:`swap_in` replaces it atomically
(``ModelState.swap``). Requests take ``state.current()`` once, so those in flight finish on the
version they started with; the old pipeline is closed only after a grace period longer than the
request timeout, once its queue is empty. A version that fails to load or warm up is logged and
counted (``ems_model_reload_failures_total``), the old one keeps serving, and the load is
retried at the next poll. An unreachable tracking server is a warning; serving goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ModelLoadError
from .metrics import Metrics
from .mlflow_cache import AliasCache, short
from .mlflow_uri import (
    Identity,
    Pinned,
    current_version,
    is_unreachable,
    mlflow_client,
    parse_uri,
    resolve_pinned,
    tracking_uri,
)
from .pipeline import Pipeline
from .settings import Settings
from .state import ModelState

log = logging.getLogger(__name__)
Builder = Callable[[Path], Pipeline]


def info_labels(info: dict) -> tuple[str, ...]:
    """``model_info`` labels: task, precision, provider, name, version, alias, backend and the
    precision the backend computes in."""
    name = info.get("name") or Path(str(info.get("path", ""))).name
    return tuple(
        str(v or "")
        for v in (
            info.get("task"),
            info.get("precision"),
            info.get("provider"),
            name,
            info.get("version"),
            info.get("alias"),
            info.get("backend"),
            info.get("compute_precision"),
        )
    )


def swap_in(
    state: ModelState,
    metrics: Metrics,
    pipeline: Pipeline,
    identity: Identity,
    retire_after: float,
) -> None:
    """Serve ``pipeline`` from now on; retire the previous one after ``retire_after`` seconds."""
    info = {**pipeline.model.describe(), **identity.as_info()}
    previous = state.info
    old = state.swap(pipeline, info, identity.version)
    if previous:
        metrics.set_model_info(state.name, info_labels(previous), 0)
    metrics.set_model_info(state.name, info_labels(info), 1)
    if old is not None and old is not pipeline:
        timer = threading.Timer(retire_after, _close_when_idle, args=(old,))
        timer.daemon = True
        timer.name = "retire-model"
        timer.start()


def _close_when_idle(pipeline: Pipeline, patience: float = 60.0) -> None:
    deadline = time.monotonic() + patience
    while getattr(pipeline.executor, "queued_rows", 0) and time.monotonic() < deadline:
        time.sleep(0.1)
    pipeline.close()
    log.info("closed the previous model version (%s)", pipeline.model.path)


class AliasReloader:
    """Polls ``models:/NAME@ALIAS`` every ``settings.reload_interval`` seconds (a daemon thread)."""

    def __init__(
        self,
        settings: Settings,
        identity: Identity,
        state: ModelState,
        metrics: Metrics,
        build: Builder,
    ) -> None:
        self.settings, self.state, self.metrics, self.build = settings, state, metrics, build
        self.ref = parse_uri(str(identity.uri))
        self.identity = identity
        self.version = identity.version
        self._stop = threading.Event()
        self._client = mlflow_client(settings)
        self._warned = False
        self._thread = threading.Thread(
            target=self._run, name=f"alias-reloader-{state.name}", daemon=True
        )

    def start(self) -> AliasReloader:
        log.info(
            "watching %s every %gs for a new version (serving version %s as %r)",
            self.ref.uri,
            self.settings.reload_interval,
            self.version,
            self.state.name,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.settings.reload_interval):
            try:
                self.poll_once()
            except Exception:  # never let the thread die
                log.exception("unexpected error while checking %s", self.ref.uri)

    def poll_once(self) -> bool:
        """Check the alias once; load and swap in a new version. True when it swapped."""
        try:
            version = current_version(self.ref, self._client)
        except Exception as exc:
            what = "is unreachable" if is_unreachable(exc) else "answered with an error"
            if not self._warned:
                log.warning(
                    "the MLflow tracking server %s %s (%s); still serving version %s of %s",
                    tracking_uri(),
                    what,
                    short(exc),
                    self.version,
                    self.ref.uri,
                )
                self._warned = True
            return False
        if self._warned:
            log.info("the MLflow tracking server answers again")
            self._warned = False
        if version == self.version:
            return False
        log.info(
            "%s moved from version %s to %s: loading it in the background",
            self.ref.uri,
            self.version,
            version,
        )
        started = time.monotonic()
        pinned = Pinned(self.ref, tracking_uri(), f"models:/{self.ref.name}/{version}", version)
        try:
            model_dir = resolve_pinned(pinned, self.settings)
            pipeline = self.build(model_dir)
        except Exception as exc:
            self.metrics.reload_failures.inc()
            message = (
                exc.message if isinstance(exc, ModelLoadError) else f"{type(exc).__name__}: {exc}"
            )
            log.error(
                "cannot load version %s of %s: %s; version %s keeps serving (retrying at the next "
                "check)",
                version,
                self.ref.uri,
                message,
                self.version,
            )
            return False
        AliasCache(self.settings).put(
            pinned.tracking_uri, str(self.ref.name), str(self.ref.alias), version
        )
        identity = Identity(self.ref.uri, self.ref.name, version, self.ref.alias)
        swap_in(
            self.state,
            self.metrics,
            pipeline,
            identity,
            retire_after=self.settings.request_timeout + 5.0,
        )
        log.info(
            "now serving version %s of %s (was %s; loaded in %.1fs)",
            version,
            self.ref.uri,
            self.version,
            time.monotonic() - started,
        )
        self.version, self.identity = version, identity
        return True


def start_reloader(
    settings: Settings, identity: Identity, state: ModelState, metrics: Metrics, build: Builder
) -> AliasReloader | None:
    """An :class:`AliasReloader` when serving an alias URI with ``--reload-interval`` > 0."""
    if identity.alias is None or identity.uri is None or settings.reload_interval <= 0:
        return None
    return AliasReloader(settings, identity, state, metrics, build).start()
