"""MODEL argument -> exported model directory.

An exported directory is used as it is. A Hugging Face model directory or hub id is exported
first -- int8 on CPU, fp16 on CUDA unless ``--quantize`` says otherwise -- into a cache directory
keyed by the model and the options, and that cache is reused on the next start. The export runs
in a child process (``exasol-mlflow-server export``), so the serving process never imports torch
or transformers. Cache entries are written atomically (temp dir + rename) under a file lock, so
several workers starting at once export only once.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .autoexport import export_precision, export_to_cache
from .errors import ModelLoadError
from .manifest import is_exported_dir
from .mlflow_uri import resolve_mlflow_uri
from .settings import Settings

log = logging.getLogger(__name__)
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def resolve_model(settings: Settings, source: str | None) -> Path:
    """Return the exported model directory to serve for ``source`` (one ``--model`` value)."""
    if not source:
        raise ModelLoadError("no model given: pass MODEL (or --model, or set EMS_MODEL)")
    if "://" in source or source.startswith(("models:/", "runs:/", "file:")):
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
