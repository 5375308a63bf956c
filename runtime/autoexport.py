"""Export a Hugging Face model on first use, into the cache (``serve HF_DIR_OR_ID``, MLflow flavors).

The export runs in a child process (``exasol-mlflow-server export``), so the serving process
never imports torch or transformers. The entry is keyed by the source's fingerprint and the
options, and written through :func:`~.cache.build_once` (locked, atomic), so several workers
starting at once export only once.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

from .cache import build_once, fingerprint
from .errors import ModelLoadError
from .manifest import read_manifest
from .session import cuda_available
from .settings import Settings


def export_precision(settings: Settings) -> str:
    if settings.quantize != "auto":
        return settings.quantize
    return "fp16" if settings.device != "cpu" and cuda_available() else "int8"


def cache_entry_ok(path: Path) -> bool:
    """A usable cache entry: a readable manifest and its files (a partial export is rebuilt)."""
    try:
        read_manifest(path)
    except ModelLoadError:
        return False
    return (path / "MLmodel").is_file()


def export_to_cache(
    source: str,
    settings: Settings,
    precision: str,
    cache_dir: Path | None = None,
    name: str | None = None,
    task: str | None = None,
) -> Path:
    """Export ``source`` (HF dir or hub id) into the cache unless a good entry exists."""
    cache_dir = cache_dir or settings.resolved_cache_dir() / "exports"
    label = re.sub(r"[^\w.-]+", "_", name or Path(source).name or source)[:60]
    parts: list = [fingerprint(source), precision, settings.max_length] + ([task] if task else [])
    key = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    target = cache_dir / f"{label}-{precision}-{key}"

    def build(tmp: Path) -> Path:
        out = tmp / "model"
        cmd = [sys.executable, "-m", "exasol_mlflow_server", "export", source, "--output", str(out)]
        cmd += ["--quantize", precision]
        if settings.max_length > 0:
            cmd += ["--max-length", str(settings.max_length)]
        if task:
            cmd += ["--task", task]
        print(
            f"exporting {source} ({precision}) into the cache {target} ...",
            file=sys.stderr,
            flush=True,
        )
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0:
            raise ModelLoadError(
                f"exporting {source} failed (exit code {proc.returncode}); see the messages above"
            )
        return out

    return build_once(target, cache_entry_ok, build)
