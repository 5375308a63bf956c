"""MODEL argument -> exported model directory.

An exported directory is used as it is. A Hugging Face model directory or hub id is exported
first -- int8 on CPU, fp16 on CUDA unless ``--quantize`` says otherwise -- into a cache directory
keyed by the model and the options, and that cache is reused on the next start. The export runs
in a child process (``exasol-mlflow-server export``), so the serving process never imports torch
or transformers. Cache entries are written atomically (temp dir + rename) under a file lock, so
several workers starting at once export only once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ModelLoadError
from .model import is_exported_dir, read_manifest
from .session import cuda_available
from .settings import Settings

log = logging.getLogger(__name__)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def export_precision(settings: Settings) -> str:
    if settings.quantize != "auto":
        return settings.quantize
    return "fp16" if settings.device != "cpu" and cuda_available() else "int8"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - Windows: best effort
            pass
        yield


def build_once(target: Path, is_ok: Callable[[Path], bool], build: Callable[[Path], Path]) -> Path:
    """The cache entry ``target``, built at most once even when several processes start at once.

    Under a file lock a good entry is reused and a partial or corrupt one is removed; ``build(tmp)``
    works in a temp dir beside the target and returns the directory that is renamed into place,
    so readers never see a half-written entry.
    """
    root = target.parent
    with file_lock(root / f".{target.name}.lock"):
        if is_ok(target):
            log.info("using cached %s", target)
            return target
        if target.exists():
            log.warning("cache entry %s is incomplete or corrupt; rebuilding it", target)
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}.tmp-"))
        try:
            os.replace(build(tmp), target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _fingerprint(source: str) -> str:
    path = Path(source)
    parts = [source]
    if path.is_dir():
        parts = [str(path.resolve())]
        for child in sorted(path.iterdir()):
            if child.is_file():
                stat = child.stat()
                parts.append(f"{child.name}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


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
    parts: list = [_fingerprint(source), precision, settings.max_length] + ([task] if task else [])
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


def resolve_model(settings: Settings) -> Path:
    """Return the exported model directory to serve for ``settings.model``."""
    source = settings.model
    if not source:
        raise ModelLoadError("no model given: pass MODEL (or --model, or set EMS_MODEL)")
    if "://" in source or source.startswith(("models:/", "runs:/", "file:")):
        from .mlflow_uri import resolve_mlflow_uri

        return resolve_mlflow_uri(source, settings)
    path = Path(source).expanduser()
    if path.is_dir():
        if is_exported_dir(path):
            return path
        if (path / "config.json").is_file():
            return export_to_cache(str(path.resolve()), settings, export_precision(settings))
        raise ModelLoadError(
            f"{path} is neither an exported model (no exasol_model.json) nor a Hugging Face model (no config.json)"
        )
    if path.exists():
        raise ModelLoadError(f"{path} is not a directory")
    if not HUB_ID.match(source) or source.startswith((".", "/", "~")):
        raise ModelLoadError(
            f"model {source!r} not found: no such directory, and not a Hugging Face hub id"
        )
    return export_to_cache(source, settings, export_precision(settings))
