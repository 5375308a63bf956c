"""``--workers N``: a supervisor process and N worker processes sharing one port.

Every worker is a spawned process that runs :func:`~.server.run_worker` on its own listening
socket with SO_REUSEPORT (the kernel spreads new connections over them); each has its own
sessions, batchers and ``cores / N`` ONNX Runtime threads. The supervisor holds the port bound
(never listening, so it gets no connections) to keep it while workers come and go.

* **Replacement.** A worker that dies while the supervisor is not stopping (a crash, the OOM
  killer, ``kill``) is logged, counted (``ems_worker_restarts_total``) and replaced after a
  backoff: :data:`BACKOFF_START_S` after the first crash in the window, doubled for every further
  crash in it, at most :data:`BACKOFF_MAX_S`. A replacement listens only once its models are
  warm, so meanwhile its siblings take every new connection.
* **Crash loop.** More than :data:`CRASH_LIMIT` crashes within :data:`CRASH_WINDOW_S` seconds
  stop every worker and the supervisor exits :data:`EXIT_CRASH_LOOP`. A worker that cannot load
  its models at start (exit ``server.EXIT_LOAD_FAILED``) would fail again: the supervisor stops
  at once with that code.
* **Shutdown.** SIGTERM/SIGINT are forwarded to every worker, which drain (``drain.py``); the
  supervisor waits ``--drain-timeout`` plus :data:`STOP_GRACE_S`, kills what is left, and exits 0
  when every worker exited 0.
* **Metrics.** A fresh directory for prometheus_client's multiprocess mode, made at start and
  removed at exit; a scrape of any worker sums every worker (and the supervisor's counters).
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from .logs import configure_logging
from .settings import (
    ModelSpec,
    Settings,
    disable_multiprocess_metrics,
    enable_multiprocess_metrics,
)

Served = Sequence[tuple[ModelSpec, Path]]

log = logging.getLogger("exasol_mlflow_server")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
CRASH_LIMIT = 5
CRASH_WINDOW_S = 60.0
STOP_GRACE_S = 5.0
EXIT_CRASH_LOOP = 1
PR_SET_PDEATHSIG = 1


# The server module (and with it prometheus_client) is imported only once the multiprocess
# directory is set: prometheus_client chooses its value class when it is first imported.


def _worker_main(
    settings: Settings, served: Served, slot: int, port: int, metrics_dir: str, replacement: bool
) -> None:
    from .server import make_socket, run_worker

    os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the supervisor only, which forwards it once
    _die_with_parent()
    sock = make_socket(settings.host, port, reuse_port=True, listen=not replacement)
    raise SystemExit(run_worker(settings, served, sock, slot, metrics_dir, replacement))


def _die_with_parent() -> None:
    """Linux: SIGTERM (a drain) for this worker when the supervisor dies without stopping it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def backoff(crashes: int) -> float:
    """Seconds before replacing a worker, given the crashes in the current window (>= 1)."""
    return min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** max(0, crashes - 1))


class CrashWindow:
    """Crashes within the last ``window`` seconds; more than ``limit`` of them is a crash loop."""

    def __init__(self, limit: int = CRASH_LIMIT, window: float = CRASH_WINDOW_S) -> None:
        self.limit, self.window = limit, window
        self.times: deque[float] = deque()

    def record(self, now: float) -> int:
        """Count a crash at ``now``; returns the crashes in the window."""
        self.times.append(now)
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()
        return len(self.times)

    @property
    def looping(self) -> bool:
        return len(self.times) > self.limit


class Supervisor:
    def __init__(self, settings: Settings, served: Served, metrics_dir: str) -> None:
        from .metrics import Metrics, mark_process_dead
        from .server import EXIT_LOAD_FAILED, make_socket

        self.settings, self.served, self.metrics_dir = settings, list(served), metrics_dir
        self.metrics = Metrics(metrics_dir)
        self._mark_dead = mark_process_dead
        self.exit_load_failed = EXIT_LOAD_FAILED
        self.ctx = multiprocessing.get_context("spawn")
        self.workers: dict[int, Any] = {}  # slot -> Process
        self.restart_at: dict[int, float] = {}  # slot -> monotonic time of its replacement
        self.crashes = CrashWindow()
        self.stopping: int | None = None
        self.exit_code = 0
        # keep the port: bound with SO_REUSEPORT but never listening, so it gets no connections
        self.holder = make_socket(settings.host, settings.port, reuse_port=True, listen=False)
        self.port = self.holder.getsockname()[1]

    def start(self, slot: int, replacement: bool = False) -> None:
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.settings, self.served, slot, self.port, self.metrics_dir, replacement),
            name=f"worker-{slot}",
        )
        proc.start()
        self.workers[slot] = proc
        self.metrics.workers.set(len(self.workers))
        log.info("started worker %d (pid %d)", slot, proc.pid)

    def handle_signal(self, signum: int, frame: Any) -> None:
        if self.stopping is None:
            log.info("received %s: stopping the workers", signal.Signals(signum).name)
        self.stopping = signum
        self._signal_all(signum)

    def _signal_all(self, signum: int) -> None:
        for proc in self.workers.values():
            if proc.pid and proc.exitcode is None:
                try:
                    os.kill(proc.pid, signum)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.handle_signal)
        signal.signal(signal.SIGINT, self.handle_signal)
        for slot in range(self.settings.workers):
            self.start(slot)
        while self.stopping is None and self.exit_code == 0:
            now = time.monotonic()
            due = [s for s, at in self.restart_at.items() if at <= now]
            for slot in due:
                del self.restart_at[slot]
                self.start(slot, replacement=True)
            timeout = min([1.0, *(at - now for at in self.restart_at.values())])
            sentinels = {proc.sentinel: slot for slot, proc in self.workers.items()}
            for sentinel in wait(list(sentinels), max(0.0, timeout)):
                if self.stopping is None:
                    self._died(sentinels[sentinel])
        return self._stop()

    def _died(self, slot: int) -> None:
        proc = self.workers.pop(slot)
        proc.join()
        self._mark_dead(proc.pid, self.metrics_dir)
        self.metrics.workers.set(len(self.workers))
        code = proc.exitcode
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        if code == self.exit_load_failed:
            log.error("worker %d (pid %d) cannot load its models: stopping", slot, proc.pid)
            self.exit_code = code
            return
        now = time.monotonic()
        crashes = self.crashes.record(now)
        if self.crashes.looping:
            log.error(
                "worker %d (pid %d) %s: %d crashes within %gs -- a crash loop; stopping",
                slot,
                proc.pid,
                how,
                crashes,
                self.crashes.window,
            )
            self.exit_code = EXIT_CRASH_LOOP
            return
        delay = backoff(crashes)
        log.error("worker %d (pid %d) %s; replacing it in %.1fs", slot, proc.pid, how, delay)
        self.metrics.worker_restarts.inc()
        self.restart_at[slot] = now + delay

    def _stop(self) -> int:
        self.restart_at.clear()
        self._signal_all(self.stopping or signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_timeout + STOP_GRACE_S
        codes = []
        for slot, proc in list(self.workers.items()):
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                log.error("worker %d (pid %d) did not stop in time: killing it", slot, proc.pid)
                proc.kill()
                proc.join()
            codes.append(proc.exitcode)
        self.holder.close()
        if self.exit_code:
            return self.exit_code
        # a worker still starting up may die of the forwarded signal itself: nothing was lost
        clean = (0, -(self.stopping or signal.SIGTERM))
        return 0 if all(code in clean for code in codes) else 1


def run_workers(settings: Settings, served: Served) -> int:
    """``--workers N``: supervise N worker processes on one port. Returns the exit code."""
    configure_logging(settings.log_level, settings.log_format)
    metrics_dir = tempfile.mkdtemp(prefix="ems-metrics-")
    enable_multiprocess_metrics(metrics_dir)
    try:
        return Supervisor(settings, served, metrics_dir).run()
    finally:
        disable_multiprocess_metrics()
        shutil.rmtree(metrics_dir, ignore_errors=True)
