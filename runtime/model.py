"""Load an exported model directory (see DEVELOPERS.md) into a ready-to-run :class:`LoadedModel`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .generation import open_model
from .generation.config import ModelFacts
from .generation.model import CausalLM, Seq2SeqLM
from .session import OnnxRunner
from .tasks import GENERATIVE_TASKS, TASK_NAMES, task_class
from .tasks.base import Task, TaskContext, TaskOptions
from .tokenize import TextTokenizer

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
    lm: CausalLM | Seq2SeqLM | None = None  # generative tasks: the model the decoding loop drives

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

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
    options: TaskOptions | None = None,
) -> LoadedModel:
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    options = options or TaskOptions(label_only=label_only)
    special = manifest.get("special_tokens") or {}
    exported_max = int(manifest.get("max_length") or 512)
    lm = None
    if manifest["task"] in GENERATIVE_TASKS:
        lm = _open_generative(model_dir, manifest, device, threads)
        runner = lm.decoder if isinstance(lm, Seq2SeqLM) else lm.runner
        exported_max += 1  # longer inputs are rejected, not truncated: let them show
    else:
        runner = OnnxRunner(model_dir / manifest["model_file"], device=device, threads=threads)
    tokenizer = TextTokenizer(
        model_dir / manifest["tokenizer_file"],
        max_length=min(max_length, exported_max) if max_length > 0 else exported_max,
        pad_id=int(special.get("pad_token_id") or 0),
    )
    task = task_class(manifest["task"])(TaskContext(manifest, tokenizer, options))
    missing = [o for o in task.outputs if o not in runner.output_names]
    if missing:
        raise ModelLoadError(
            f"{model_dir}: the ONNX graph lacks outputs {missing} needed by {task.name}"
        )
    return LoadedModel(model_dir, manifest, runner, tokenizer, task, lm)


def _open_generative(
    model_dir: Path, manifest: dict[str, Any], device: str, threads: int
) -> CausalLM | Seq2SeqLM:
    try:
        facts = ModelFacts.from_manifest(manifest["generation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_dir}: the manifest's generation section is invalid ({exc})"
        ) from None
    for part, name in facts.files.items():
        if not (model_dir / name).is_file():
            raise ModelLoadError(f"{model_dir}: the {part} file {name!r} is missing")
    return open_model(model_dir, facts, device=device, threads=threads)
