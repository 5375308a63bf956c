"""The one way tests and benchmarks start a server: a subprocess on a free loopback port.

:class:`ServerProcess` starts a command in its own session with its output in a log file, polls a
readiness path until it answers 200 (``cold_start_s`` = start to first 200), and stops it with a
signal (the main process only -- our server drains and stops its own workers -- or, for servers
that leave children behind such as MLflow's uvicorn, the whole session), then SIGKILLs the
session if it is late. :func:`ours` builds the command lines of our server.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(port: int, path: str = "/ping", timeout: float = 2.0) -> int | None:
    """The status of ``GET path`` on loopback, or None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the Hugging Face Hub switched off (it is unreachable)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def read_tail(path: Path | None, chars: int = 4000) -> str:
    """The last ``chars`` characters of a log file ("" when it cannot be read)."""
    try:
        return Path(path).read_text(errors="replace")[-chars:] if path else ""
    except OSError:
        return ""


def ours(model: str | Path, port: int, *args: str, style: str = "serve") -> list[str]:
    """Our server's command line: ``serve MODEL``, the seed's (no subcommand), or MLflow's
    (``models serve -m MODEL -h HOST -p PORT --env-manager local`` with our console script)."""
    if style == "seed":
        cmd = [sys.executable, "-m", "exasol_mlflow_server", "--model", str(model)]
        return [*cmd, "--host", "127.0.0.1", "--port", str(port), *args]
    if style == "mlflow":
        binary = str(Path(sys.executable).with_name("exasol-mlflow-server"))
        cmd = [binary, "models", "serve", "-m", str(model), "-h", "127.0.0.1", "-p", str(port)]
        return [*cmd, "--env-manager", "local", *args]
    cmd = [sys.executable, "-m", "exasol_mlflow_server", "serve", str(model)]
    return [*cmd, "--host", "127.0.0.1", "--port", str(port), *args]


def session_cpu_s(session: int, skip: int = -1) -> float:
    """utime+stime (and reaped children's) of every process in ``session`` except ``skip``."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == skip:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 14 and int(fields[3]) == session:
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


class ServerProcess:
    """``with ServerProcess(cmd, port) as srv: srv.url`` -- real HTTP on loopback."""

    def __init__(
        self,
        cmd: list[str],
        port: int,
        *,
        name: str = "server",
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        ready_path: str = "/ping",
        ready_timeout: float = 120.0,
        stop_group: bool = False,
        cwd: Path | None = None,
    ) -> None:
        self.cmd, self.port, self.name = list(cmd), port, name
        self.cwd = cwd
        self.url = f"http://127.0.0.1:{port}"
        self.env = env if env is not None else offline_env()
        self.log_path = Path(log_path) if log_path else None
        self.ready_path, self.ready_timeout = ready_path, ready_timeout
        self.stop_group = stop_group
        self.proc: subprocess.Popen | None = None
        self.cold_start_s: float | None = None

    def start(self, wait: bool = True) -> Any:
        """Start it; with ``wait`` (the default) return once ``ready_path`` answers 200."""
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"ems-{self.name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                cwd=self.cwd,
            )
        if not wait:
            return self
        deadline = start + self.ready_timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if http_status(self.port, self.ready_path) == 200:
                self.cold_start_s = time.perf_counter() - start
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}"
        )

    def log(self) -> str:
        return read_tail(self.log_path, 10**9)

    def log_tail(self, chars: int = 4000) -> str:
        return read_tail(self.log_path, chars)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Signal it and wait; the exit code, or None when it had to be killed (or never ran)."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            return self.proc.returncode
        if self.stop_group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            return None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
