"""Start the real server as a subprocess on a free loopback port (used by many test modules)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``with ServerProcess(model_dir, "--threads", "1") as srv: srv.url`` -- real HTTP on loopback."""

    def __init__(
        self,
        model: str | Path,
        *args: str,
        env: dict[str, str] | None = None,
        seed_style: bool = False,
        mlflow_style: bool = False,
        ready_timeout: float = 120.0,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "exasol_mlflow_server"]
        if seed_style:  # the seed's documented command, no subcommand
            cmd += ["--model", str(model), "--host", "127.0.0.1", "--port", str(self.port)]
        elif mlflow_style:  # `mlflow models serve ...` with `mlflow` replaced by our console script
            cmd = [str(Path(sys.executable).with_name("exasol-mlflow-server")), "models", "serve"]
            cmd += ["-m", str(model), "-h", "127.0.0.1", "-p", str(self.port)]
            cmd += ["--env-manager", "local"]
        else:
            cmd += ["serve", str(model), "--port", str(self.port)]
        self.cmd = [*cmd, *args]
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    def start(self) -> ServerProcess:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="ems-server-", suffix=".log")
        self.log_path = Path(name)
        self.proc = subprocess.Popen(self.cmd, stdout=fd, stderr=subprocess.STDOUT, env=self.env)
        os.close(fd)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/ping", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server not ready after {self.ready_timeout}s:\n{self.log()}")

    def log(self) -> str:
        return (
            self.log_path.read_text(errors="replace")
            if self.log_path and self.log_path.exists()
            else ""
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
