"""What the exporter reads from a Hugging Face model directory: the task, labels, pooling.

The per-task facts themselves (export task, labels or not, columns, ...) are each task's
``SPEC`` (``runtime/tasks``). Pure Python (reads JSON files only), so it is cheap to import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from exasol_mlflow_server.exporter.errors import InvalidModelError, UnknownTaskError
from exasol_mlflow_server.exporter.settings import TASKS

POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_lasttoken": "lasttoken",
}


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict) and not isinstance(data, list):
        raise InvalidModelError(f"{path} does not hold a JSON object")
    return data  # type: ignore[return-value]


def id2label(config: dict[str, Any]) -> list[str] | None:
    """Id-ordered label names from an HF config dict, or None."""
    raw = config.get("id2label")
    if not raw:
        return None
    try:
        mapping = {int(k): str(v) for k, v in raw.items()}
    except (AttributeError, ValueError) as exc:
        raise InvalidModelError(f"config.json id2label is malformed: {raw!r}") from exc
    return [mapping.get(i, f"LABEL_{i}") for i in range(max(mapping) + 1)]


def _find_label(labels: list[str], prefix: str) -> int | None:
    for i, label in enumerate(labels):
        if label.lower().startswith(prefix):
            return i
    return None


def looks_like_nli(labels: list[str] | None) -> bool:
    return bool(labels) and _find_label(labels, "entail") is not None  # type: ignore[arg-type]


def zero_shot_ids(labels: list[str] | None) -> dict[str, int]:
    """``{"entailment_id", "contradiction_id"}`` from NLI labels (HF's fallback for contradiction)."""
    if not labels or (entail := _find_label(labels, "entail")) is None:
        raise UnknownTaskError(
            "zero-shot-classification needs an NLI sequence-classification model with an "
            f"'entailment' label; this model's labels are {labels}"
        )
    contradiction = _find_label(labels, "contradict")
    if contradiction is None:  # what transformers' ZeroShotClassificationPipeline falls back to
        contradiction = len(labels) - 1 if entail == 0 else 0
    return {"entailment_id": entail, "contradiction_id": contradiction}


def is_sentence_transformers_dir(model_dir: Path) -> bool:
    return (model_dir / "modules.json").is_file()


def split_task(task: str) -> tuple[str, str | None]:
    """``translation_en_to_de`` (a transformers pipeline task) -> (``translation``, that key)."""
    if task.startswith("translation_"):
        return "translation", task
    return task, None


def seq2seq_task(config: dict[str, Any]) -> str:
    """An encoder-decoder's task: translation or summarization when the config's
    ``task_specific_params`` name only that (Marian/OPUS-MT: translation), else text2text."""
    names = {k.split("_")[0] for k in config.get("task_specific_params") or {}}
    if config.get("model_type") == "marian" or names == {"translation"}:
        return "translation"
    if names == {"summarization"}:
        return "summarization"
    return "text2text-generation"


def infer_task(config: dict[str, Any], model_dir: Path) -> str:
    """The task for a model without ``--task``: sentence-transformers dir, else the architecture."""
    if is_sentence_transformers_dir(model_dir):
        return "feature-extraction"
    architectures = config.get("architectures") or []
    arch = architectures[0] if architectures else ""
    if arch.endswith("ForSequenceClassification"):
        return (
            "zero-shot-classification"
            if looks_like_nli(id2label(config))
            else "text-classification"
        )
    if arch.endswith("ForTokenClassification"):
        return "token-classification"
    if arch.endswith("ForQuestionAnswering"):
        return "question-answering"
    if arch.endswith("ForMaskedLM"):
        return "fill-mask"
    if arch.endswith(("ForConditionalGeneration", "MTModel")) and config.get("is_encoder_decoder"):
        return seq2seq_task(config)
    if arch.endswith(("LMHeadModel", "ForCausalLM")):
        return "text-generation"
    if arch.endswith("Model") and "For" not in arch and "Head" not in arch:  # not GPT2LMHeadModel
        return "feature-extraction"
    raise UnknownTaskError(
        f"cannot infer the task from architecture {arch or '(none in config.json)'!r}; "
        f"pass --task (one of: {', '.join(TASKS)})"
    )


def pooling_config(model_dir: Path) -> dict[str, Any]:
    """Pooling mode and normalisation from sentence-transformers files (mean, no normalize otherwise)."""
    modules_file = model_dir / "modules.json"
    if not modules_file.is_file():
        return {"mode": "mean", "normalize": False}
    modules = read_json(modules_file)
    if not isinstance(modules, list):
        raise InvalidModelError(f"{modules_file} should hold a JSON list of modules")
    normalize = any(str(m.get("type", "")).endswith(".Normalize") for m in modules)
    mode = "mean"
    for module in modules:
        if str(module.get("type", "")).endswith(".Pooling"):
            pooling_file = model_dir / module.get("path", "") / "config.json"
            if pooling_file.is_file():
                mode = _pooling_mode(read_json(pooling_file), pooling_file)
    return {"mode": mode, "normalize": normalize}


def _pooling_mode(cfg: dict[str, Any], path: Path) -> str:
    named = cfg.get("pooling_mode")
    if isinstance(named, str):  # newer sentence-transformers spell it out
        cfg = {f"pooling_mode_{named}": True, **cfg}
        if named == "mean":
            cfg["pooling_mode_mean_tokens"] = True
    chosen = [mode for key, mode in POOLING_KEYS.items() if cfg.get(key)]
    unsupported = [
        k
        for k in ("pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens")
        if cfg.get(k)
    ]
    if unsupported or len(chosen) > 1:
        raise InvalidModelError(
            f"{path}: pooling {', '.join(unsupported + chosen)} is not supported; "
            "the runtime pools with exactly one of mean, cls, max, lasttoken"
        )
    return chosen[0] if chosen else "mean"
