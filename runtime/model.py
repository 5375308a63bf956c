"""Load an exported model directory (see DEVELOPERS.md) into a ready-to-run :class:`LoadedModel`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .backends import Runner, open_runner
from .errors import ModelLoadError
from .generation import open_model
from .generation.config import ModelFacts
from .generation.model import CausalLM, Seq2SeqLM
from .manifest import Manifest, read_manifest
from .tasks import task_class, task_spec
from .tasks.base import Task, TaskContext, TaskOptions
from .tokenize import Seq, TextTokenizer, collate


@dataclass
class LoadedModel:
    path: Path
    manifest: Manifest
    runner: Runner
    tokenizer: TextTokenizer
    task: Task
    lm: CausalLM | Seq2SeqLM | None = None  # generative tasks: the model the decoding loop drives

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def bucket_width(self) -> int:
        """On CUDA, micro-batches are padded to a few shapes (see :func:`.tokenize.bucket_shape`);
        0 (off) elsewhere, where a shape costs nothing by itself and padding costs compute."""
        return self.tokenizer.max_length if self.runner.on_cuda else 0

    def run_batch(self, seqs: Sequence[Seq]) -> list[Any]:
        """[run] + [reduce] one micro-batch (called by the executor, in its thread)."""
        ids, mask, types, lengths = collate(seqs, self.tokenizer.pad_id, self.bucket_width)
        outputs = self.runner.run(
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
            list(self.task.outputs),
        )
        n = len(seqs)  # the bucket's padding rows are dropped before the task sees them
        outputs = {name: value[:n] for name, value in outputs.items()}
        outputs["input_ids"] = ids[:n]  # lets a task pick positions (fill-mask: the mask tokens)
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
    options: TaskOptions | None = None,
) -> LoadedModel:
    """``backend``: see :mod:`.backends` (the server's default is ``auto``; in-process callers
    get ONNX Runtime unless they ask); ``cache_dir``: where OpenVINO keeps compiled models."""
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir)
    options = options or TaskOptions(label_only=label_only)
    exported_max = manifest.max_length
    lm = None
    if task_spec(manifest.task).kind == "generative":
        lm = _open_generative(model_dir, manifest, device, threads)
        runner = lm.decoder if isinstance(lm, Seq2SeqLM) else lm.runner
        exported_max += 1  # longer inputs are rejected, not truncated: let them show
    else:
        runner = open_runner(
            model_dir / manifest.model_file,
            manifest.precision,
            backend=backend,
            device=device,
            threads=threads,
            cache_dir=cache_dir,
        )
    tokenizer = TextTokenizer(
        model_dir / manifest.tokenizer_file,
        max_length=min(max_length, exported_max) if max_length > 0 else exported_max,
        pad_id=manifest.special_tokens.pad_token_id or 0,
    )
    task = task_class(manifest.task)(TaskContext(manifest, tokenizer, options))
    missing = [o for o in task.outputs if o not in runner.output_names]
    if missing:
        raise ModelLoadError(
            f"{model_dir}: the ONNX graph lacks outputs {missing} needed by {task.name}"
        )
    return LoadedModel(model_dir, manifest, runner, tokenizer, task, lm)


def _open_generative(
    model_dir: Path, manifest: Manifest, device: str, threads: int
) -> CausalLM | Seq2SeqLM:
    try:
        facts = ModelFacts.from_manifest(manifest.extra["generation"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{model_dir}: the manifest's generation section is missing or invalid ({exc})"
        ) from None
    for part, name in facts.files.items():
        if not (model_dir / name).is_file():
            raise ModelLoadError(f"{model_dir}: the {part} file {name!r} is missing")
    return open_model(
        model_dir, facts, device=device, threads=threads, precision=manifest.precision
    )
