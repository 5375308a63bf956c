"""Load an exported model directory (see DEVELOPERS.md) into a ready-to-run :class:`LoadedModel`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import Runner, open_runner
from .errors import ModelLoadError
from .manifest import Manifest, read_manifest
from .tasks import task_class
from .tasks.base import Task, TaskContext, TaskOptions
from .tokenize import Seq, TextTokenizer, collate


@dataclass
class LoadedModel:
    path: Path
    manifest: Manifest
    runner: Runner
    tokenizer: TextTokenizer
    task: Task

    @property
    def precision(self) -> str:
        return self.manifest.precision

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
            "backend": self.runner.backend,
            "provider": self.runner.provider,
            "compute_precision": self.runner.precision,
            "threads": self.runner.threads,
            "max_length": self.tokenizer.max_length,
            "labels": list(self.manifest.labels) if self.manifest.labels else None,
            "source": dict(self.manifest.source) if self.manifest.source else None,
        }


def load_model(
    model_dir: Path,
    device: str = "auto",
    threads: int = 1,
    max_length: int = 0,
    label_only: bool = False,
    backend: str = "onnxruntime",
    cache_dir: Path | None = None,
) -> LoadedModel:
    """``backend``: see :mod:`.backends` (the server's default is ``auto``; in-process callers
    get ONNX Runtime unless they ask); ``cache_dir``: where OpenVINO keeps compiled models."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    runner = open_runner(
        model_dir / manifest.model_file,
        manifest.precision,
        backend=backend,
        device=device,
        threads=threads,
        cache_dir=cache_dir,
    )
    exported_max = manifest.max_length
    tokenizer = TextTokenizer(
        model_dir / manifest.tokenizer_file,
        max_length=min(max_length, exported_max) if max_length > 0 else exported_max,
        pad_id=manifest.special_tokens.pad_token_id or 0,
    )
    task = task_class(manifest.task)(
        TaskContext(manifest, tokenizer, TaskOptions(label_only=label_only))
    )
    missing = [o for o in task.outputs if o not in runner.output_names]
    if missing:
        raise ModelLoadError(
            f"{model_dir}: the ONNX graph lacks outputs {missing} needed by {task.name}"
        )
    return LoadedModel(model_dir, manifest, runner, tokenizer, task)
