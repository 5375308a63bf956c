"""HF PyTorch model -> fp32 ONNX through optimum-onnx's exporter (dynamic batch and sequence axes).

The PyTorch model is loaded once, here, through optimum's ``TasksManager`` (which also takes Hub
ids), exported with ``onnx_export_from_model`` and then reused as the reference for the quality
report, so the weights are read from disk only once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter.errors import (
    ConversionError,
    InvalidModelError,
    UnsupportedArchitectureError,
)
from exasol_mlflow_server.exporter.source import ModelSource
from exasol_mlflow_server.runtime.tasks import task_spec


def check_exportable(source: ModelSource, task: str) -> None:
    """Fail early unless optimum-onnx can export this model type for this task."""
    import optimum.exporters.onnx.model_configs  # noqa: F401  (registers the ONNX configs)
    from optimum.exporters.tasks import TasksManager

    optimum_task = task_spec(task).export_task
    if task_spec(task).kind == "generative":
        optimum_task += "-with-past"  # the decoding loop needs the KV cache
    model_type = source.model_type.replace("_", "-")
    supported = TasksManager._SUPPORTED_MODEL_TYPE  # the registry main_export consults as well
    if model_type not in supported and source.model_type not in supported:
        raise UnsupportedArchitectureError(
            f"optimum-onnx cannot export model type {source.model_type!r} "
            f"(architecture {source.architecture or 'unknown'}); it is not in optimum's ONNX registry"
        )
    tasks = TasksManager.get_supported_tasks_for_model_type(
        model_type, "onnx", library_name="transformers"
    )
    if optimum_task not in tasks:
        raise UnsupportedArchitectureError(
            f"optimum-onnx can export {source.model_type!r} models only for {', '.join(sorted(tasks))}, "
            f"not for {task} (ONNX task {optimum_task!r})"
        )


def load_model(source: ModelSource, task: str) -> Any:
    """The PyTorch model for ``task`` in eval mode (fp32, CPU)."""
    import torch
    from optimum.exporters.tasks import TasksManager

    try:
        model = TasksManager.get_model_from_task(
            task_spec(task).export_task,
            str(source.path),
            framework="pt",
            library_name="transformers",
            torch_dtype=torch.float32,
            device="cpu",
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidModelError(
            f"cannot load the PyTorch model from {source.path}: {_first_line(exc)}"
        ) from exc
    except Exception as exc:  # safetensors raises its own error type for corrupt files
        if type(exc).__name__ in ("SafetensorError", "HeaderTooLarge", "UnpicklingError"):
            raise InvalidModelError(
                f"model weights in {source.path} are corrupt: {_first_line(exc)}"
            ) from exc
        raise
    model.eval()
    return model


def export_onnx(model: Any, task: str, work_dir: Path, opset: int | None) -> Path:
    """Export ``model`` to ``work_dir/model.onnx`` (fp32) and return its path."""
    run_export(model, task_spec(task).export_task, work_dir, opset)
    path = work_dir / "model.onnx"
    if not path.is_file():
        raise ConversionError(f"the ONNX export did not produce {path}")
    return path


def run_export(model: Any, optimum_task: str, work_dir: Path, opset: int | None) -> None:
    """optimum-onnx's export of ``model`` for ``optimum_task`` into ``work_dir`` (fp32)."""
    from optimum.exporters.onnx import onnx_export_from_model

    work_dir.mkdir(parents=True, exist_ok=True)
    try:
        onnx_export_from_model(
            model,
            output=work_dir,
            task=optimum_task,
            opset=opset,
            do_validation=False,  # our own report compares against PyTorch on real text
            preprocessors=None,
        )
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise UnsupportedArchitectureError(
            f"optimum-onnx cannot export this model: {_first_line(exc)}"
        ) from exc
    except RuntimeError as exc:
        raise ConversionError(f"the ONNX export failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
