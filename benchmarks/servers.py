"""The systems under test as files and processes: cached exports, our server, MLflow's server.

Exports are cached under ``<cache>/<task>-<precision>`` (default ``.cache/bench``), so reruns
reuse them. MLflow's comparison model is the same seeded classifier saved with the transformers
flavor under ``<cache>/mlflow-transformers-text-classification``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from exasol_mlflow_server.runtime.cache import build_once

from .harness import ServerProcess, free_port, offline_env, read_tail, session_cpu_s
from .harness import ours as harness_ours
from .paths import default_cache

__all__ = ["Server", "free_port", "offline_env", "read_tail"]

DEFAULT_CACHE = default_cache()
QUANTIZE = {"fp32": ("none", "O2"), "int8": ("int8", "O2"), "fp16": ("fp16", "O4")}
MLFLOW_TASK = "text-classification"  # MLflow's transformers flavor returns no pooled embeddings


def source_model_dir(task: str) -> Path:
    """The Hugging Face model directory for ``task``: MiniLM itself, or the seeded classifier."""
    from exasol_mlflow_server import fixtures

    if task == "feature-extraction":
        return fixtures.minilm_dir()
    if task == "translation":  # the seeded T5 (benchmarks/generation.py)
        return fixtures.generative_model_dir("t5")
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


def export_info(path: Path, seconds: float) -> dict[str, Any]:
    manifest = json.loads((path / "exasol_model.json").read_text(encoding="utf-8"))
    info: dict[str, Any] = {
        "path": str(path),
        "precision": manifest.get("precision"),
        "optimization": manifest.get("optimization"),
        "quantization": manifest.get("quantization"),
        "model_bytes": (path / manifest["model_file"]).stat().st_size,
        "seconds_to_get": round(seconds, 1),
    }
    quality = path / "quality.json"
    if quality.is_file():
        q = json.loads(quality.read_text(encoding="utf-8"))
        info["exporter_quality"] = q.get("primary")
    return info


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
    source = source_model_dir(MLFLOW_TASK)
    return save_transformers_model(source, "AutoModelForSequenceClassification", MLFLOW_TASK, cache)


def save_transformers_model(source: Path, auto_class: str, task: str, cache: Path) -> Path:
    """``source`` saved with MLflow's transformers flavor as a ``task`` pipeline, in a subprocess
    (cached under ``cache``: built once, atomically)."""
    script = (
        "import sys, mlflow.transformers\n"
        f"from transformers import {auto_class}, AutoTokenizer\n"
        "src, out = sys.argv[1], sys.argv[2]\n"
        f"model = {auto_class}.from_pretrained(src)\n"
        "tok = AutoTokenizer.from_pretrained(src)\n"
        "reqs = ['mlflow', 'transformers', 'torch']  # explicit: skips pip inference\n"
        "mlflow.transformers.save_model(transformers_model={'model': model, 'tokenizer': tok},\n"
        f"    path=out, task={task!r}, pip_requirements=reqs)\n"
    )

    def build(tmp: Path) -> Path:
        out = tmp / "model"
        proc = subprocess.run(
            [sys.executable, "-c", script, str(source), str(out)],
            env=offline_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mlflow.transformers.save_model failed:\n{proc.stderr[-3000:]}")
        return out

    target = Path(cache) / f"mlflow-transformers-{task}"
    return build_once(target, lambda path: (path / "MLmodel").is_file(), build)


_UNTRACKED_CPU = [0.0]  # CPU-seconds of server grandchildren that nobody of ours reaps


def untracked_cpu_s() -> float:
    """CPU used by stopped servers' descendants that ``os.times()`` cannot see (for noise)."""
    return _UNTRACKED_CPU[0]


class Server(ServerProcess):
    """A benchmarked server; stopping it also books the CPU of its session's other processes
    (``untracked_cpu_s``), which ``os.times()`` cannot see."""

    def __init__(self, name: str, cmd: list[str], port: int, log_dir: Path, **kwargs: Any) -> None:
        env = offline_env(kwargs.pop("env", None))
        kwargs.setdefault("ready_timeout", 300.0)
        super().__init__(
            cmd, port, name=name, log_path=Path(log_dir) / f"{name}.log", env=env, **kwargs
        )

    @classmethod
    def ours(
        cls,
        model_dir: Path,
        log_dir: Path,
        threads: int,
        device: str = "cpu",
        extra: list[str] | None = None,
        name: str = "ours",
        backend: str = "onnxruntime",
    ) -> Server:
        """Our server with an explicit ``--backend`` (``auto`` would pick one silently)."""
        port = free_port()
        # the cells cycle through one pool of rows: without this, a repeated row would be a
        # cache hit; the repeated-column cells turn the cache on explicitly (``extra`` wins)
        args = ["--threads", str(threads), "--device", device, "--result-cache-mb", "0"]
        args += ["--backend", backend, *(extra or [])]
        return cls(name, harness_ours(model_dir, port, *args), port, log_dir)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @classmethod
    def mlflow(cls, model_dir: Path, log_dir: Path, threads: int) -> Server:
        port = free_port()
        cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", str(model_dir)]
        cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        return cls("mlflow", cmd, port, log_dir, env=env, stop_group=True)  # uvicorn's children

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is not None and self.proc.poll() is None:
            _UNTRACKED_CPU[0] += session_cpu_s(self.proc.pid, skip=self.proc.pid)
        return super().stop(sig, timeout)
