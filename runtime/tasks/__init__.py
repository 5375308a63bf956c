"""Task registry: task name -> :class:`~.base.Task` subclass."""

from __future__ import annotations

import importlib

from .base import Task

_MODULES = {
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
GENERATIVE_TASKS = ("text2text-generation", "translation", "summarization", "text-generation")
TASK_NAMES = tuple(_MODULES)


def task_class(name: str) -> type[Task]:
    if name not in _MODULES:
        raise KeyError(f"unknown task {name!r}; supported: {', '.join(TASK_NAMES)}")
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)
