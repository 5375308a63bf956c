"""Task registry: task name -> its module, which holds the task's ``SPEC`` and its class.

(The registry imports no task module up front, and neither ``base`` -- which imports the manifest
that imports this registry.)

Adding a task: one new module with a :class:`~.spec.TaskSpec` and the class that runs it, and one
line here. Modules are imported on first use.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .spec import TaskSpec

_MODULES = {  # task name -> (module, class)
    "feature-extraction": ("feature_extraction", "FeatureExtraction"),
    "text-classification": ("text_classification", "TextClassification"),
    "token-classification": ("token_classification", "TokenClassification"),
    "question-answering": ("question_answering", "QuestionAnswering"),
    "zero-shot-classification": ("zero_shot", "ZeroShotClassification"),
    "fill-mask": ("fill_mask", "FillMask"),
    "text2text-generation": ("text2text_generation", "Text2TextGeneration"),
    "translation": ("translation", "Translation"),
    "summarization": ("summarization", "Summarization"),
    "text-generation": ("text_generation", "TextGeneration"),
}
TASK_NAMES = tuple(_MODULES)


def _module(name: str) -> ModuleType:
    if name not in _MODULES:
        raise KeyError(f"unknown task {name!r}; supported: {', '.join(TASK_NAMES)}")
    return importlib.import_module(f"{__name__}.{_MODULES[name][0]}")


def task_spec(name: str) -> TaskSpec:
    """The descriptor of task ``name`` (KeyError naming the supported tasks otherwise)."""
    return _module(name).SPEC


def task_class(name: str) -> type:
    """The class that runs task ``name`` (a :class:`~.base.Task` for encoder tasks)."""
    return getattr(_module(name), _MODULES[name][1])


def all_specs() -> tuple[TaskSpec, ...]:
    return tuple(task_spec(name) for name in TASK_NAMES)


def mlflow_task_map() -> dict[str, str]:
    """transformers-flavor pipeline task -> our task, from every task's ``mlflow_tasks``."""
    return {mlflow: spec.name for spec in all_specs() for mlflow in spec.mlflow_tasks}
