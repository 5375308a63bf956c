"""Load an exported model directory (see DEVELOPERS.md) into a ready-to-run :class:`LoadedModel`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .session import OnnxRunner
from .tasks import TASK_NAMES, task_class
from .tasks.base import Task, TaskContext, TaskOptions
from .tokenize import Seq, TextTokenizer, collate

MANIFEST = "exasol_model.json"
FORMAT_VERSION = 1


def is_exported_dir(path: Path) -> bool:
    return (path / MANIFEST).is_file()


def read_manifest(model_dir: Path) -> dict[str, Any]:
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ModelLoadError(
            f"{model_dir} is not a model written by `exasol-mlflow-server export` ({MANIFEST} is missing)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(
            f"{path}: unsupported format_version {manifest.get('format_version')!r}"
        )
    if manifest.get("task") not in TASK_NAMES:
        raise ModelLoadError(f"{path}: unsupported task {manifest.get('task')!r}")
    for key in ("model_file", "tokenizer_file"):
        if not (model_dir / str(manifest.get(key, ""))).is_file():
            raise ModelLoadError(f"{model_dir}: {key} {manifest.get(key)!r} is missing")
    return manifest


@dataclass
class LoadedModel:
    path: Path
    manifest: dict[str, Any]
    runner: OnnxRunner
    tokenizer: TextTokenizer
    task: Task

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    def run_batch(self, seqs: Sequence[Seq]) -> list[Any]:
        """[run] + [reduce] one micro-batch (called by the executor, in its thread)."""
        ids, mask, types, lengths = collate(seqs, self.tokenizer.pad_id)
        outputs = self.runner.run(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
            list(self.task.outputs),
        )
        outputs["input_ids"] = ids  # lets a task pick positions (fill-mask: the mask tokens)
        return self.task.reduce(outputs, lengths)

    def describe(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "task": self.task.name,
            "precision": self.precision,
            "provider": self.runner.provider,
            "threads": self.runner.threads,
            "max_length": self.tokenizer.max_length,
            "labels": self.manifest.get("labels"),
            "source": self.manifest.get("source"),
        }


def load_model(
    model_dir: Path,
    device: str = "auto",
    threads: int = 1,
    max_length: int = 0,
    label_only: bool = False,
) -> LoadedModel:
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    runner = OnnxRunner(model_dir / manifest["model_file"], device=device, threads=threads)
    special = manifest.get("special_tokens") or {}
    exported_max = int(manifest.get("max_length") or 512)
    tokenizer = TextTokenizer(
        model_dir / manifest["tokenizer_file"],
        max_length=min(max_length, exported_max) if max_length > 0 else exported_max,
        pad_id=int(special.get("pad_token_id") or 0),
    )
    task = task_class(manifest["task"])(
        TaskContext(manifest, tokenizer, TaskOptions(label_only=label_only))
    )
    missing = [o for o in task.outputs if o not in runner.output_names]
    if missing:
        raise ModelLoadError(
            f"{model_dir}: the ONNX graph lacks outputs {missing} needed by {task.name}"
        )
    return LoadedModel(model_dir, manifest, runner, tokenizer, task)
