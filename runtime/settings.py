"""The one settings object of `serve`, fed by CLI flags and environment variables.

:class:`Settings` declares every field once, with its default; :data:`OPTIONS` gives each field
its flags, environment variables and help. The argparse parser, the README table and the values
all derive from these two through :mod:`exasol_mlflow_server.settings`, the mechanism every
command shares. CLI flags override environment variables, which override defaults. This is the
only serving module that reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exasol_mlflow_server.settings import (
    Option,
    OptionSet,
    SettingsError,
    parse_bool,
    parse_list,
)

ENV_PREFIX = "EMS_"

# Measured on MiniLM-L6 (benchmark rows, requests of 100, 2 cores): 512 padded tokens per ONNX
# Runtime CPU micro-batch run ~1.5x faster than 8192 (activations stay in cache; 1024 is within
# noise for int8, ~5% slower for fp32); OpenVINO bf16 prefers larger batches (2048 > 512 on
# Sapphire Rapids); GPUs want large batches.
CPU_BATCH_TOKENS = 512
OPENVINO_BATCH_TOKENS = 2048
CUDA_BATCH_TOKENS = 32768


def default_batch_tokens(runner: Any) -> int:
    """The micro-batch token budget for a runner (its backend and device)."""
    if runner.on_cuda:
        return CUDA_BATCH_TOKENS
    return OPENVINO_BATCH_TOKENS if runner.backend == "openvino" else CPU_BATCH_TOKENS


def batch_schedulers(runner: Any) -> int:
    """Scheduler threads taking micro-batches for one model: two on a CPU with two or more
    intra-op threads (one batch is collated and handed back while the other runs; measured
    +3-30% rows/s on 2 cores, MiniLM int8 and OpenVINO bf16, batch 1 x 16 and 100 x 1), one on
    CUDA and on a single core."""
    return 1 if runner.on_cuda else min(2, max(1, int(runner.threads)))


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a container's
    ``limits.cpu``, which ``os.cpu_count()`` does not see)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cpus, math.ceil(quota))) if quota else max(1, cpus)


def _cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPU quota in cores (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "exasol-mlflow-server")


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its name (in URLs and metric labels) and where it comes from."""

    name: str
    source: str


def parse_model_spec(text: str) -> ModelSpec:
    """``NAME=PATH_OR_URI``, or a bare path/URI named after its directory (or registered name)."""
    name, sep, source = text.partition("=")
    if sep and MODEL_NAME.match(name) and source:
        return ModelSpec(name, source)
    if sep and not source:
        raise SettingsError(f"--model {text!r}: nothing after '='")
    return ModelSpec(default_model_name(text), text)


def default_model_name(source: str) -> str:
    """``models:/clf@champion`` -> clf; ``runs:/ID/model`` -> model; ``out/minilm/`` -> minilm."""
    text = source.rstrip("/")
    if text.startswith("models:/"):
        text = re.split(r"[@/]", text[len("models:/") :])[0]
    elif text in ("", ".", ".."):
        text = Path(text or ".").resolve().name
    else:
        text = Path(text.removeprefix("file:")).name
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).lstrip("._-")[:100]
    return text or "model"


@dataclass(frozen=True)
class Settings:
    model: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: int = 5000
    device: str = "auto"
    backend: str = "auto"
    threads: int = 0
    workers: int = 1
    http_threads: int = 32
    max_batch_tokens: int = 0
    max_batch_delay_ms: float = 1.0
    max_queued_rows: int = 20000
    request_timeout: float = 60.0
    drain_timeout: float = 30.0
    max_body_bytes: int = 100 * 1024 * 1024
    max_length: int = 0
    max_new_tokens_limit: int = 256
    max_input_tokens: int = 0
    result_cache_mb: float = 128.0
    label_only: bool = False
    quantize: str = "auto"
    cache_dir: str | None = None
    tracking_uri: str | None = None
    reload_interval: float = 30.0
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None
    log_level: str = "info"
    log_format: str = "text"
    access_log: bool = True

    # ---- derived values -------------------------------------------------------------
    def model_specs(self) -> tuple[ModelSpec, ...]:
        """The served models, in order (the first is the default); names must be unique."""
        specs = tuple(parse_model_spec(text) for text in self.model)
        seen: set[str] = set()
        for spec in specs:
            if spec.name in seen:
                raise SettingsError(
                    f"two models are named {spec.name!r}: name them with --model NAME=PATH_OR_URI"
                )
            seen.add(spec.name)
        return specs

    def intra_op_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        return max(1, available_cpus() // max(1, self.workers))

    def batch_token_budget(self, runner: Any) -> int:
        if self.max_batch_tokens > 0:
            return self.max_batch_tokens
        return default_batch_tokens(runner)

    def result_cache_bytes(self) -> int:
        return int(max(0.0, self.result_cache_mb) * 1024 * 1024)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir or _default_cache_dir())

    def compiled_cache_dir(self) -> Path:
        """Where OpenVINO keeps compiled models, so a restart compiles nothing."""
        return self.resolved_cache_dir() / "openvino"

    def bearer_token(self) -> str | None:
        """The token from ``--token`` or the token file (stripped), or None when auth is off."""
        if self.token:
            return self.token.strip()
        if self.token_file:
            text = Path(self.token_file).read_text(encoding="utf-8").strip()
            if not text:
                raise ValueError(f"token file {self.token_file} is empty")
            return text
        return None

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        ("--model", "-m", "--model-uri"),
        "exported model directory, a Hugging Face model directory / hub id, or an MLflow model URI "
        "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH; exported on first use and cached); "
        "repeat as NAME=PATH_OR_URI to serve several models (the first is the default; the "
        "environment variable takes a comma-separated list)",
        positional=True,
        metavar="MODEL",
        repeatable=True,
    ),
    Option(
        "host",
        ("-h", "--host"),
        "interface to bind; 0.0.0.0 exposes the server on all interfaces",
        env=("MLFLOW_HOST",),
    ),
    Option("port", ("--port", "-p"), "TCP port", int, env=("MLFLOW_PORT", "PORT")),
    Option(
        "device",
        ("--device",),
        "execution provider: auto (CUDA when usable, else CPU), cpu, cuda",
        choices=("auto", "cpu", "cuda"),
    ),
    Option(
        "backend",
        ("--backend",),
        "inference engine: auto (OpenVINO in bf16 for fp32 exports on CPUs with AMX-BF16 or "
        "AVX512-BF16 when the openvino extra is installed, else ONNX Runtime; always ONNX Runtime "
        "on CUDA), onnxruntime, openvino",
        choices=("auto", "onnxruntime", "openvino"),
    ),
    Option(
        "threads",
        ("--threads",),
        "ONNX Runtime intra-op threads of each model's session (0 = usable CPUs / workers; the "
        "CPUs are the affinity mask capped by a cgroup quota, e.g. a container's CPU limit)",
        int,
    ),
    Option(
        "workers",
        ("--workers", "-w"),
        "server processes sharing the port, each with its own session",
        int,
        env=("MLFLOW_MODELS_WORKERS",),
    ),
    Option(
        "http_threads",
        ("--http-threads",),
        "waitress threads per worker (they mostly wait for the batcher; keep >= concurrent clients)",
        int,
    ),
    Option(
        "max_batch_tokens",
        ("--max-batch-tokens",),
        "token budget of one micro-batch, padded rows x longest row (0 = 512 with ONNX Runtime on "
        "CPU, 2048 with OpenVINO, 32768 on CUDA)",
        int,
    ),
    Option(
        "max_batch_delay_ms",
        ("--max-batch-delay-ms",),
        "how long an idle batcher waits for more rows before it runs a batch (0 allowed)",
        float,
    ),
    Option(
        "max_queued_rows",
        ("--max-queued-rows",),
        "rows a worker holds per model (admitted and not yet answered); a request beyond it "
        "gets 503 with Retry-After before its body is decoded or tokenized",
        int,
    ),
    Option(
        "request_timeout",
        ("--request-timeout", "-t", "--timeout"),
        "seconds a request may take; then 504 and its queued rows are dropped",
        float,
        env=("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT",),
    ),
    Option(
        "drain_timeout",
        ("--drain-timeout",),
        "on SIGTERM: stop accepting, finish in-flight requests, then exit within this many seconds",
        float,
    ),
    Option(
        "max_body_bytes",
        ("--max-body-bytes",),
        "largest request body accepted; larger bodies get 413",
        int,
    ),
    Option(
        "max_length",
        ("--max-length",),
        "truncate inputs to this many tokens (0 = the model's exported max length)",
        int,
    ),
    Option(
        "max_new_tokens_limit",
        ("--max-new-tokens-limit",),
        "generative tasks: the most new tokens a request may ask for (max_new_tokens above it is a 400)",
        int,
    ),
    Option(
        "max_input_tokens",
        ("--max-input-tokens",),
        "generative tasks: longest input in tokens; longer rows are a 400 (0 = the model's exported limit)",
        int,
    ),
    Option(
        "result_cache_mb",
        ("--result-cache-mb",),
        "memory for cached results per model (MiB; each distinct row of a model version is "
        "computed once; 0 = off; identical rows in one request are always computed once)",
        float,
    ),
    Option(
        "label_only",
        ("--label-only",),
        "text-classification: each prediction is the plain label string (for `predictions[0]` as VARCHAR)",
        parse_bool,
    ),
    Option(
        "quantize",
        ("--quantize",),
        "precision when a HF model is exported on first use: auto (int8 on CPU, fp16 on CUDA), none, int8, fp16",
        choices=("auto", "none", "int8", "fp16"),
    ),
    Option(
        "cache_dir",
        ("--cache-dir",),
        "where models exported on first use are cached (default: $XDG_CACHE_HOME or ~/.cache, /exasol-mlflow-server)",
    ),
    Option(
        "tracking_uri",
        ("--tracking-uri",),
        "MLflow tracking server for models:/ and runs:/ URIs (MLflow's auth variables apply)",
        env=("MLFLOW_TRACKING_URI",),
    ),
    Option(
        "reload_interval",
        ("--reload-interval",),
        "models:/NAME@ALIAS: seconds between checks of the alias; a new version is loaded in the "
        "background and swapped in (0 = never)",
        float,
    ),
    Option(
        "token",
        ("--token",),
        "bearer token required on /invocations (prefer --token-file or the environment variable)",
    ),
    Option("token_file", ("--token-file",), "file holding the bearer token"),
    Option(
        "log_level",
        ("--log-level",),
        "logging level",
        choices=("debug", "info", "warning", "error"),
    ),
    Option("log_format", ("--log-format",), "log line format", choices=("text", "json")),
    Option(
        "access_log",
        ("--access-log",),
        "one log line per request (never with input text)",
        parse_bool,
    ),
)
SERVE_OPTIONS = OptionSet(Settings, ENV_PREFIX, OPTIONS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    SERVE_OPTIONS.add_arguments(parser)


def from_sources(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """:class:`Settings` from CLI values, else ``EMS_*`` variables, else compatibility variables.

    A positional MODEL given together with ``--model`` flags is the first model.
    """
    settings = SERVE_OPTIONS.build(args, env)
    positional = getattr(args, "model_pos", None)
    if positional and getattr(args, "model", None):
        settings = settings.replace(model=(*parse_list(positional), *settings.model))
    return settings


def enable_multiprocess_metrics(directory: str) -> None:
    """``--workers``: prometheus_client's multiprocess mode for this process and its children.

    Must run before anything imports prometheus_client (it reads the variable at import).
    """
    os.environ[MULTIPROC_ENV] = directory


def disable_multiprocess_metrics() -> None:
    os.environ.pop(MULTIPROC_ENV, None)


def configure_process() -> None:
    """Process-wide knobs that must be set before the libraries start their thread pools.

    The Rust tokenizer would otherwise start a thread per core for every batch and compete with
    ONNX Runtime's intra-op threads; tokenisation is cheap (~0.2 ms/row) and runs in the request
    threads, in parallel with inference, so its own parallelism is switched off.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def markdown_table() -> str:
    """The README's table of flags and environment variables."""
    return SERVE_OPTIONS.markdown_table()


__all__ = [
    "OPTIONS",
    "SERVE_OPTIONS",
    "ModelSpec",
    "Settings",
    "SettingsError",
    "add_arguments",
    "from_sources",
    "markdown_table",
]
