"""Shared fixtures: real models (fixture wheel + seeded task models), cached exports, live servers.

Everything is real: the genuine all-MiniLM-L6-v2, ONNX exports made by our exporter, and servers
started on a free loopback port. Exports are cached under ``.cache/exports`` (git-ignored) keyed
by task and options, so a second test run reuses them.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from exasol_mlflow_server import fixtures

REPO = Path(__file__).resolve().parent.parent
EXPORT_CACHE = Path(os.environ.get("EMS_EXPORT_CACHE", REPO / ".cache" / "exports"))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return fixtures.minilm_dir()


GENERATION_TEXTS = [  # inputs of different lengths decoded in one batch (generation tests)
    "Hello world",
    "The meeting was moved to Thursday.",
    "Quantised INT8 models are usually two to three times faster than fp32 on modern CPUs.",
    "Completely new words like zebra appear here",
    "Paris",
]


GENERATIVE_FIXTURES = {  # task -> seeded generative model kind (llama: text-generation too)
    "text2text-generation": "t5",
    "translation": "t5",
    "summarization": "t5",
    "text-generation": "gpt2",
}


def source_model_dir(task: str) -> Path:
    """The HF model directory used for ``task`` (MiniLM itself for feature-extraction)."""
    if task == "feature-extraction":
        return fixtures.minilm_dir()
    if task in GENERATIVE_FIXTURES:
        return fixtures.generative_model_dir(GENERATIVE_FIXTURES[task])
    return fixtures.task_model_dir(task)


def exporter_fingerprint() -> str:
    """Hash of the exporter's source: a changed exporter never reuses a stale cached export."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "exporter").glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:10]


def exported_model_dir(
    task: str, quantize: str = "none", optimize: str = "O2", source: Path | None = None
) -> Path:
    """Export (once, cached) the fixture model for ``task`` (or ``source``); return the MLflow dir."""
    from exasol_mlflow_server.exporter.pipeline import export_model
    from exasol_mlflow_server.exporter.settings import ExportSettings

    name = f"{task}-{quantize}-{optimize}" + (f"-{source.name}" if source else "")
    target = EXPORT_CACHE / f"{name}-{exporter_fingerprint()}"
    if (target / "MLmodel").is_file() and (target / "exasol_model.json").is_file():
        return target
    if target.exists():
        shutil.rmtree(target)
    EXPORT_CACHE.mkdir(parents=True, exist_ok=True)
    export_model(
        ExportSettings(
            model=str(source or source_model_dir(task)),
            output=target,
            task=task,
            quantize=quantize,
            optimize=optimize,
        ),
        progress=False,
    )
    return target


@pytest.fixture(scope="session")
def export_dir():
    """Factory fixture: ``export_dir(task, quantize="none")`` -> cached exported model dir."""
    return exported_model_dir


@pytest.fixture(scope="session")
def server_for():
    """Factory fixture: ``server_for(task, *extra_args, quantize="none")`` -> running ServerProcess.

    One server per (task, quantize, args) for the whole session, started on a free loopback port
    and stopped with SIGTERM at the end.
    """
    from tests.serverproc import ServerProcess

    servers: dict[tuple, ServerProcess] = {}

    def get(
        task: str, *args: str, quantize: str = "none", env: dict[str, str] | None = None
    ) -> ServerProcess:
        key = (task, quantize, args, tuple(sorted((env or {}).items())))
        if key not in servers:
            model = exported_model_dir(task, quantize)
            # ONNX Runtime unless a test asks: the parity tests compare fp32 to PyTorch closely,
            # and `--backend auto` picks OpenVINO bf16 on CPUs with native bf16
            backend = () if "--backend" in args else ("--backend", "onnxruntime")
            servers[key] = ServerProcess(model, "--threads", "1", *backend, *args, env=env)
            servers[key].start()
        return servers[key]

    yield get
    for srv in servers.values():
        srv.stop()


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the ``name`` series in Prometheus text that carry every one of ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        series, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total
