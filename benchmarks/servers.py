"""The systems under test as files and processes: cached exports, our server, MLflow's server.

Exports are cached under ``<cache>/<task>-<precision>`` (default ``.cache/bench``), so reruns
reuse them. MLflow's comparison model is the same seeded classifier saved with the transformers
flavor under ``<cache>/mlflow-transformers-text-classification``.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from exasol_mlflow_server.runtime.cache import build_once

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO / ".cache" / "bench"
QUANTIZE = {"fp32": ("none", "O2"), "int8": ("int8", "O2"), "fp16": ("fp16", "O4")}
MLFLOW_TASK = "text-classification"  # MLflow's transformers flavor returns no pooled embeddings


def offline_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(extra or {})
    return env


def source_model_dir(task: str) -> Path:
    """The Hugging Face model directory for ``task``: MiniLM itself, or the seeded classifier."""
    from exasol_mlflow_server import fixtures

    if task == "feature-extraction":
        return fixtures.minilm_dir()
    return fixtures.task_model_dir(task)


def exported_dir(task: str, precision: str, cache: Path = DEFAULT_CACHE) -> Path:
    """Export (once; cached) the fixture model for ``task`` at ``precision`` and return its dir."""

    def build(tmp: Path) -> Path:
        from exasol_mlflow_server.exporter.pipeline import export_model
        from exasol_mlflow_server.exporter.settings import ExportSettings

        quantize, optimize = QUANTIZE[precision]
        out = tmp / "model"
        settings = ExportSettings(
            model=str(source_model_dir(task)),
            output=out,
            task=task,
            quantize=quantize,
            optimize=optimize,
        )
        export_model(settings, progress=False)
        return out

    def done(path: Path) -> bool:
        return (path / "MLmodel").is_file() and (path / "exasol_model.json").is_file()

    return build_once(Path(cache) / f"{task}-{precision}", done, build)


def mlflow_available() -> str | None:
    """None when MLflow's scoring server can run here, else why not."""
    import importlib.util

    for module in ("mlflow", "uvicorn", "transformers", "torch"):  # mlflow>=3 serves with uvicorn
        if importlib.util.find_spec(module) is None:
            return (
                f"{module} is not installed; install MLflow with `pip install mlflow` "
                "(it is in the project's [test] extra)"
            )
    return None


def mlflow_model_dir(cache: Path = DEFAULT_CACHE) -> Path:
    """The seeded classifier saved with MLflow's transformers flavor (cached)."""
    script = (
        "import sys, mlflow.transformers\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "src, out = sys.argv[1], sys.argv[2]\n"
        "model = AutoModelForSequenceClassification.from_pretrained(src)\n"
        "tok = AutoTokenizer.from_pretrained(src)\n"
        "reqs = ['mlflow', 'transformers', 'torch']  # explicit: skips pip inference\n"
        "mlflow.transformers.save_model(transformers_model={'model': model, 'tokenizer': tok},\n"
        f"    path=out, task={MLFLOW_TASK!r}, pip_requirements=reqs)\n"
    )

    def build(tmp: Path) -> Path:
        out = tmp / "model"
        src = source_model_dir(MLFLOW_TASK)
        proc = subprocess.run(
            [sys.executable, "-c", script, str(src), str(out)],
            env=offline_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mlflow.transformers.save_model failed:\n{proc.stderr[-3000:]}")
        return out

    target = Path(cache) / f"mlflow-transformers-{MLFLOW_TASK}"
    return build_once(target, lambda path: (path / "MLmodel").is_file(), build)


_UNTRACKED_CPU = [0.0]  # CPU-seconds of server grandchildren that nobody of ours reaps


def untracked_cpu_s() -> float:
    """CPU used by stopped servers' descendants that ``os.times()`` cannot see (for noise)."""
    return _UNTRACKED_CPU[0]


def read_tail(path: Path, chars: int = 4000) -> str:
    """The last ``chars`` characters of a log file ("" when it cannot be read)."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def stop_session(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM a process started in its own session (it and its children only); SIGKILL late."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _session_cpu_s(session: int, skip: int) -> float:
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ping(port: int, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class Server:
    """A server subprocess on a free loopback port; ``cold_start_s`` = start -> first 200 /ping."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        log_dir: Path,
        env: dict[str, str] | None = None,
        ready_timeout: float = 300.0,
    ) -> None:
        self.name, self.cmd, self.port = name, cmd, port
        self.env = offline_env(env)
        self.ready_timeout = ready_timeout
        self.log_path = Path(log_dir) / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.cold_start_s: float | None = None

    @classmethod
    def ours(
        cls,
        model_dir: Path,
        log_dir: Path,
        threads: int,
        device: str = "cpu",
        extra: list[str] | None = None,
        name: str = "ours",
    ) -> Server:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "exasol_mlflow_server",
            "serve",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--threads",
            str(threads),
            "--device",
            device,
            *(extra or []),
        ]
        return cls(name, cmd, port, log_dir)

    @classmethod
    def mlflow(cls, model_dir: Path, log_dir: Path, threads: int) -> Server:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            str(model_dir),
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        return cls("mlflow", cmd, port, log_dir, env=env)

    def start(self) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        log.close()
        deadline = start + self.ready_timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} server exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            if _ping(self.port) == 200:
                self.cold_start_s = time.perf_counter() - start
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} server not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}"
        )

    def log_tail(self, chars: int = 4000) -> str:
        return read_tail(self.log_path, chars)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        _UNTRACKED_CPU[0] += _session_cpu_s(self.proc.pid, skip=self.proc.pid)
        stop_session(self.proc, timeout)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
