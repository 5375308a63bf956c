"""The few facts the UDF generator needs from an exported model directory."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .spec import TASK_SPECS

MANIFEST = "exasol_model.json"


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


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UdfError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise UdfError(f"{path} does not hold a JSON object")
    return data


def read_model_info(model_dir: str | Path) -> ModelInfo:
    path = Path(model_dir)
    if not path.is_dir():
        raise UdfError(f"model directory {path} does not exist")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UdfError(
            f"{path} is not an exported model directory (no {MANIFEST}); "
            "create one with `exasol-mlflow-server export`"
        )
    manifest = _read_json(manifest_path)
    task = manifest.get("task")
    if task not in TASK_SPECS:
        raise UdfError(
            f"{manifest_path}: unsupported task {task!r}; supported: {', '.join(TASK_SPECS)}"
        )
    labels = manifest.get("labels")
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    return ModelInfo(
        path=path,
        task=task,
        labels=tuple(str(label) for label in labels) if isinstance(labels, list) else None,
        dimension=_dimension(path, manifest) if task == "feature-extraction" else None,
        source=source.get("model"),
        precision=manifest.get("precision"),
    )


def _dimension(path: Path, manifest: dict[str, Any]) -> int | None:
    for value in (manifest.get("dimension"), manifest.get("embedding_dimension")):
        if isinstance(value, int) and value > 0:
            return value
    config = path / "config.json"
    if config.is_file():
        size = _read_json(config).get("hidden_size")
        if isinstance(size, int) and size > 0:
            return size
    return None
