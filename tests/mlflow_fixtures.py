"""MLflow fixtures: a real tracking server for the session and models logged into it.

``mlflow_server`` starts ``mlflow server`` (SQLite backend store, local artifact root, a free
loopback port, ``HF_HUB_OFFLINE=1``) once per session and stops it at the end. ``mlflow_world``
logs the real all-MiniLM-L6-v2 (transformers flavor, feature-extraction, registered as
``minilm``) and the seeded classifier (transformers flavor, registered as ``clf``, alias
``champion``) into it. :class:`TcpRelay` stands between a server under test and the tracking
server, so a test can take the tracking server "down" without stopping it for everyone else.

Test modules load this as a plugin (``pytest_plugins = ["tests.mlflow_fixtures"]``) and import
its helpers directly, hence PYTEST_DONT_REWRITE (plain asserts only here).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exasol_mlflow_server import fixtures
from tests.serverproc import ServerProcess, free_port

TEXTS = [
    "I love this product, it works great.",
    "Terrible service, I want my money back.",
    "The delivery was on time.",
    "Exasol is an in-memory analytics database.",
    "meh",
]


@dataclass
class MlflowWorld:
    url: str  # the tracking server
    cache: Path  # the session's EMS_CACHE_DIR (exports reused across tests)
    tmp: Path
    clf_run: str
    minilm_run: str

    def env(self, cache: Path | None = None, url: str | None = None) -> dict[str, str]:
        return {
            "MLFLOW_TRACKING_URI": url or self.url,
            "EMS_CACHE_DIR": str(cache or self.cache),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        }

    def fresh_cache(self, name: str) -> Path:
        path = self.tmp / f"cache-{name}"
        path.mkdir(parents=True, exist_ok=False)
        return path

    def serve(
        self,
        uri: str,
        *args: str,
        cache: Path | None = None,
        url: str | None = None,
        quantize: str = "none",
    ) -> ServerProcess:
        """A started server for ``uri`` (fp32 on ONNX Runtime unless told: parity with PyTorch)."""
        return ServerProcess(
            uri,
            "--threads",
            "1",
            "--backend",
            "onnxruntime",
            "--quantize",
            quantize,
            *args,
            env=self.env(cache, url),
            ready_timeout=400.0,
        ).start()

    def run_cli(
        self, *args: str, cache: Path | None = None, url: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        """``python -m exasol_mlflow_server ARGS`` to completion (stdout + stderr captured)."""
        return subprocess.run(
            [sys.executable, "-m", "exasol_mlflow_server", *args],
            env={**os.environ, **self.env(cache, url)},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    pytest.importorskip("mlflow")
    from exasol_mlflow_server.benchmarks.registry import TrackingServer

    server = TrackingServer(tmp_path_factory.mktemp("tracking")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_world(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> MlflowWorld:
    pytest.importorskip("transformers")
    from exasol_mlflow_server.benchmarks.registry import log_transformers_model

    clf_run, clf_version = log_transformers_model(
        mlflow_server,
        fixtures.task_model_dir("text-classification"),
        "text-classification",
        "clf",
        alias="champion",
    )
    assert clf_version == "1"
    minilm_run, _ = log_transformers_model(
        mlflow_server, fixtures.minilm_dir(), "feature-extraction", "minilm"
    )
    tmp = tmp_path_factory.mktemp("mlflow-world")
    (tmp / "cache").mkdir()
    return MlflowWorld(mlflow_server, tmp / "cache", tmp, clf_run, minilm_run)


class TcpRelay:
    """Forwards a free loopback port to ``target``; :meth:`stop` makes the target unreachable."""

    def __init__(self, target_url: str) -> None:
        self.target_port = int(target_url.rsplit(":", 1)[1].split("/")[0])
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TcpRelay:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            with contextlib.suppress(
                OSError
            ):  # wakes the accept() (close alone leaves it listening)
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._conns.clear()


@pytest.fixture(scope="session")
def clf_race(
    mlflow_world: MlflowWorld,
) -> Iterator[tuple[list[ServerProcess], list[BaseException]]]:
    """Two servers of ``models:/clf/1`` started at the same moment on the empty session cache.

    The first user of the session cache for ``clf``: later tests find its export there.
    """
    servers = [
        ServerProcess(
            "models:/clf/1",
            "--threads",
            "1",
            "--backend",
            "onnxruntime",
            "--quantize",
            "none",
            env=mlflow_world.env(),
            ready_timeout=400.0,
        )
        for _ in range(2)
    ]
    errors: list[BaseException] = []

    def start(srv: ServerProcess) -> None:
        try:
            srv.start()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    yield servers, errors
    for srv in servers:
        srv.stop()
