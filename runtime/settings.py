"""The one settings object of `serve`, fed by CLI flags and environment variables.

Every option is declared once in :data:`OPTIONS` (flag, environment variable, type, default,
help); the argparse parser, the README table and :class:`Settings` all come from it. CLI flags
override environment variables, which override defaults. This is the only serving module that
reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "EMS_"


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


# Measured on MiniLM-L6 (benchmark rows, requests of 100, 2 cores): 512 padded tokens per CPU
# micro-batch run ~1.5x faster than 8192 (activations stay in cache; 1024 is within noise for
# int8, ~5% slower for fp32); GPUs want large batches.
CPU_BATCH_TOKENS = 512
CUDA_BATCH_TOKENS = 32768


def default_batch_tokens(on_cuda: bool) -> int:
    return CUDA_BATCH_TOKENS if on_cuda else CPU_BATCH_TOKENS


def _default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "exasol-mlflow-server")


@dataclass(frozen=True)
class Option:
    name: str  # Settings field
    flags: tuple[str, ...]
    type: Callable[[Any], Any]
    default: Any
    help: str
    env: tuple[str, ...] = ()  # extra (compatibility) variables, lower precedence than EMS_*
    choices: tuple[str, ...] | None = None

    @property
    def env_var(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        ("--model", "-m", "--model-uri"),
        str,
        None,
        "exported model directory, a Hugging Face model directory / hub id, or an MLflow model URI "
        "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH; exported on first use and cached)",
    ),
    Option(
        "host",
        ("--host",),
        str,
        "127.0.0.1",
        "interface to bind; 0.0.0.0 exposes the server on all interfaces",
        env=("MLFLOW_HOST",),
    ),
    Option("port", ("--port", "-p"), int, 5000, "TCP port", env=("MLFLOW_PORT",)),
    Option(
        "device",
        ("--device",),
        str,
        "auto",
        "execution provider: auto (CUDA when usable, else CPU), cpu, cuda",
        choices=("auto", "cpu", "cuda"),
    ),
    Option(
        "threads",
        ("--threads",),
        int,
        0,
        "ONNX Runtime intra-op threads per worker (0 = CPU cores / workers)",
    ),
    Option(
        "workers",
        ("--workers", "-w"),
        int,
        1,
        "server processes sharing the port, each with its own session",
        env=("MLFLOW_MODELS_WORKERS",),
    ),
    Option(
        "http_threads",
        ("--http-threads",),
        int,
        32,
        "waitress threads per worker (they mostly wait for the batcher; keep >= concurrent clients)",
    ),
    Option(
        "max_batch_tokens",
        ("--max-batch-tokens",),
        int,
        0,
        "token budget of one micro-batch, padded rows x longest row (0 = 512 on CPU, 32768 on CUDA)",
    ),
    Option(
        "max_batch_delay_ms",
        ("--max-batch-delay-ms",),
        float,
        1.0,
        "how long an idle batcher waits for more rows before it runs a batch (0 allowed)",
    ),
    Option(
        "max_queued_rows",
        ("--max-queued-rows",),
        int,
        20000,
        "bound of the batch queue in rows; when full, requests get 503 with Retry-After",
    ),
    Option(
        "request_timeout",
        ("--request-timeout", "-t", "--timeout"),
        float,
        60.0,
        "seconds a request may take; then 504 and its queued rows are dropped",
        env=("MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT",),
    ),
    Option(
        "max_body_bytes",
        ("--max-body-bytes",),
        int,
        100 * 1024 * 1024,
        "largest request body accepted; larger bodies get 413",
    ),
    Option(
        "max_length",
        ("--max-length",),
        int,
        0,
        "truncate inputs to this many tokens (0 = the model's exported max length)",
    ),
    Option(
        "max_new_tokens_limit",
        ("--max-new-tokens-limit",),
        int,
        256,
        "generative tasks: the most new tokens a request may ask for (max_new_tokens above it is a 400)",
    ),
    Option(
        "max_input_tokens",
        ("--max-input-tokens",),
        int,
        0,
        "generative tasks: longest input in tokens; longer rows are a 400 (0 = the model's exported limit)",
    ),
    Option(
        "label_only",
        ("--label-only",),
        _bool,
        False,
        "text-classification: each prediction is the plain label string (for `predictions[0]` as VARCHAR)",
    ),
    Option(
        "quantize",
        ("--quantize",),
        str,
        "auto",
        "precision when a HF model is exported on first use: auto (int8 on CPU, fp16 on CUDA), none, int8, fp16",
        choices=("auto", "none", "int8", "fp16"),
    ),
    Option(
        "cache_dir",
        ("--cache-dir",),
        str,
        None,
        "where models exported on first use are cached (default: $XDG_CACHE_HOME or ~/.cache, /exasol-mlflow-server)",
    ),
    Option(
        "tracking_uri",
        ("--tracking-uri",),
        str,
        None,
        "MLflow tracking server for models:/ and runs:/ URIs (MLflow's auth variables apply)",
        env=("MLFLOW_TRACKING_URI",),
    ),
    Option(
        "reload_interval",
        ("--reload-interval",),
        float,
        30.0,
        "models:/NAME@ALIAS: seconds between checks of the alias; a new version is loaded in the "
        "background and swapped in (0 = never)",
    ),
    Option(
        "token",
        ("--token",),
        str,
        None,
        "bearer token required on /invocations (prefer --token-file or the environment variable)",
    ),
    Option("token_file", ("--token-file",), str, None, "file holding the bearer token"),
    Option(
        "log_level",
        ("--log-level",),
        str,
        "info",
        "logging level",
        choices=("debug", "info", "warning", "error"),
    ),
    Option(
        "log_format", ("--log-format",), str, "text", "log line format", choices=("text", "json")
    ),
    Option(
        "access_log",
        ("--access-log",),
        _bool,
        True,
        "one log line per request (never with input text)",
    ),
)


@dataclass(frozen=True)
class Settings:
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 5000
    device: str = "auto"
    threads: int = 0
    workers: int = 1
    http_threads: int = 32
    max_batch_tokens: int = 0
    max_batch_delay_ms: float = 1.0
    max_queued_rows: int = 20000
    request_timeout: float = 60.0
    max_body_bytes: int = 100 * 1024 * 1024
    max_length: int = 0
    max_new_tokens_limit: int = 256
    max_input_tokens: int = 0
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
    def intra_op_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        return max(1, (os.cpu_count() or 1) // max(1, self.workers))

    def batch_token_budget(self, on_cuda: bool) -> int:
        if self.max_batch_tokens > 0:
            return self.max_batch_tokens
        return default_batch_tokens(on_cuda)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir or _default_cache_dir())

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every option to ``parser`` (defaults are None so that env values can be told apart)."""
    parser.add_argument("model_pos", nargs="?", metavar="MODEL", help=OPTIONS[0].help)
    for opt in OPTIONS:
        kwargs: dict[str, Any] = {"dest": opt.name, "default": None}
        env_names = ", ".join((opt.env_var, *opt.env))
        help_text = f"{opt.help} (env {env_names}; default {opt.default})"
        if opt.type is _bool:
            kwargs.update(nargs="?", const=True, type=_bool, metavar="BOOL")
        else:
            kwargs.update(type=opt.type)
        if opt.choices:
            kwargs["choices"] = opt.choices
        parser.add_argument(*opt.flags, help=help_text, **kwargs)


def from_sources(
    args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Build :class:`Settings`: CLI value, else ``EMS_*`` variable, else compatibility variable, else default."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        value = getattr(args, opt.name, None) if args is not None else None
        if value is None:
            for var in (opt.env_var, *opt.env):
                if env.get(var) not in (None, ""):
                    raw = env[var]
                    try:
                        value = opt.type(raw)
                    except ValueError as exc:
                        raise ValueError(f"environment variable {var}={raw!r}: {exc}") from None
                    if opt.choices and value not in opt.choices:
                        raise ValueError(
                            f"environment variable {var}={raw!r}: choose from {', '.join(opt.choices)}"
                        )
                    break
        if value is not None:
            values[opt.name] = value
    if args is not None and getattr(args, "model_pos", None):
        values["model"] = args.model_pos
    return Settings(**values)


def configure_process() -> None:
    """Process-wide knobs that must be set before the libraries start their thread pools.

    The Rust tokenizer would otherwise start a thread per core for every batch and compete with
    ONNX Runtime's intra-op threads; tokenisation is cheap (~0.2 ms/row) and runs in the request
    threads, in parallel with inference, so its own parallelism is switched off.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def markdown_table() -> str:
    """The README's table of flags and environment variables."""
    lines = ["| flag | environment | default | meaning |", "|---|---|---|---|"]
    for opt in OPTIONS:
        env_names = ", ".join(f"`{v}`" for v in (opt.env_var, *opt.env))
        flags = ", ".join(f"`{f}`" for f in opt.flags)
        default = "—" if opt.default in (None, "") else f"`{opt.default}`"
        lines.append(f"| {flags} | {env_names} | {default} | {opt.help} |")
    return "\n".join(lines)
