"""The few facts the UDF generator needs from an exported model directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from exasol_mlflow_server.runtime.errors import ModelLoadError
from exasol_mlflow_server.runtime.manifest import MANIFEST_FILE, read_manifest


class UdfError(Exception):
    """A user-facing error of the `udf` subcommand (printed without a traceback)."""


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    task: str
    labels: tuple[str, ...] | None
    dimension: int | None  # feature-extraction: size of the embedding (config.json hidden_size)
    source: str | None
    precision: str | None


def read_model_info(model_dir: str | Path) -> ModelInfo:
    path = Path(model_dir)
    if not path.is_dir():
        raise UdfError(f"model directory {path} does not exist")
    if not (path / MANIFEST_FILE).is_file():
        raise UdfError(
            f"{path} is not an exported model directory (no {MANIFEST_FILE}); "
            "create one with `exasol-mlflow-server export`"
        )
    try:  # the runtime's own reader: the same checks as when the model is served
        manifest = read_manifest(path, check_files=False)
    except ModelLoadError as exc:
        raise UdfError(exc.message) from None
    return ModelInfo(
        path=path,
        task=manifest.task,
        labels=manifest.labels,
        dimension=_dimension(path) if manifest.task == "feature-extraction" else None,
        source=manifest.source_model,
        precision=manifest.precision,
    )


def _dimension(path: Path) -> int | None:
    """The embedding size: config.json's hidden_size."""
    try:
        size = json.loads((path / "config.json").read_text(encoding="utf-8")).get("hidden_size")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and size > 0 else None
