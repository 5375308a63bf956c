"""``exasol_model.json``: the contract between ``export`` and ``serve``, as one typed record.

:class:`Manifest` is the only description of the file: :func:`write_manifest` (the exporter)
and :func:`read_manifest` (the runtime, pyfunc, the UDF generator) both go through it. Reading
checks everything a model needs before it serves -- format version, task, files, labels,
pooling, special tokens -- so a defect is a :class:`ModelLoadError` at load, never a 400 at
request time. Keys this version does not know are kept in ``extra`` (a newer exporter may add
some) and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelLoadError
from .tasks import TASK_NAMES, task_spec

MANIFEST_FILE = "exasol_model.json"
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "int8", "fp16")
POOLING_MODES = ("mean", "cls", "max", "lasttoken")


@dataclass(frozen=True)
class Pooling:
    mode: str = "mean"
    normalize: bool = False


@dataclass(frozen=True)
class SpecialTokens:
    pad_token_id: int | None = None
    mask_token: str | None = None
    mask_token_id: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None


@dataclass(frozen=True)
class ZeroShotIds:
    entailment_id: int
    contradiction_id: int


@dataclass(frozen=True)
class Manifest:
    task: str
    model_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    max_length: int = 512
    precision: str = "fp32"
    optimization: str | None = None
    quantization: Mapping[str, Any] | None = None  # the quantizer's settings, as recorded
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    labels: tuple[str, ...] | None = None
    problem_type: str | None = None
    pooling: Pooling | None = None
    special_tokens: SpecialTokens = field(default_factory=SpecialTokens)
    zero_shot: ZeroShotIds | None = None
    provider_hints: Mapping[str, Any] | None = None
    source: Mapping[str, Any] | None = None
    versions: Mapping[str, Any] | None = None
    created_at: str | None = None
    format_version: int = FORMAT_VERSION
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``exasol_model.json`` (nested records as objects, lists as lists)."""
        out: dict[str, Any] = {}
        for name in MANIFEST_KEYS:
            value = getattr(self, name)
            if dataclasses.is_dataclass(value):
                value = dataclasses.asdict(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return {**out, **self.extra}

    @property
    def source_model(self) -> str | None:
        return (self.source or {}).get("model")


# the keys of exasol_model.json, in the order they are written
MANIFEST_KEYS = (
    "format_version",
    *(f.name for f in dataclasses.fields(Manifest) if f.name not in ("format_version", "extra")),
)


def new_manifest(**values: Any) -> Manifest:
    """A manifest for a fresh export (``created_at`` now, unless given); checks the values."""
    values.setdefault("created_at", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return from_dict(values, "the new manifest")


def from_dict(data: Mapping[str, Any], where: str) -> Manifest:
    """Parse and check a manifest object; ``where`` names it in error messages."""

    def fail(message: str) -> ModelLoadError:
        return ModelLoadError(f"{where}: {message}")

    if not isinstance(data, Mapping):
        raise fail("does not hold a JSON object")
    data = dict(data)
    version = data.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise fail(
            f"unsupported format_version {version!r} (this server reads {FORMAT_VERSION}); "
            "export the model again with this version"
        )
    task = data.get("task")
    if task not in TASK_NAMES:
        raise fail(f"unsupported task {task!r}; supported: {', '.join(TASK_NAMES)}")
    known = {f.name for f in dataclasses.fields(Manifest)} - {"extra"}
    values = {k: v for k, v in data.items() if k in known and v is not None}
    extra = {k: v for k, v in data.items() if k not in known}
    try:
        for key in ("model_file", "tokenizer_file", "precision"):
            if key in values and not isinstance(values[key], str):
                raise ValueError(f"{key} must be a string")
        if "max_length" in values:
            values["max_length"] = _positive_int(values["max_length"], "max_length")
        for key in ("inputs", "outputs"):
            values[key] = tuple(_strings(values.get(key, ()), key))
        if "labels" in values:
            values["labels"] = tuple(_strings(values["labels"], "labels"))
        if "pooling" in values:
            values["pooling"] = Pooling(**_record(values["pooling"], Pooling, "pooling"))
        if "special_tokens" in values:
            values["special_tokens"] = SpecialTokens(
                **_record(values["special_tokens"], SpecialTokens, "special_tokens")
            )
        if "zero_shot" in values:
            values["zero_shot"] = ZeroShotIds(
                **_record(values["zero_shot"], ZeroShotIds, "zero_shot")
            )
        manifest = Manifest(**values, extra=extra)
    except (TypeError, ValueError) as exc:
        raise fail(str(exc)) from None
    _check_task_needs(manifest, fail)
    return manifest


def _check_task_needs(m: Manifest, fail: Any) -> None:
    spec = task_spec(m.task)
    if m.precision not in PRECISIONS:
        raise fail(f"unknown precision {m.precision!r}; expected one of {', '.join(PRECISIONS)}")
    if spec.has_labels and not m.labels:
        raise fail(f"task {m.task} needs labels (id-ordered label names), but there are none")
    if m.pooling is not None and m.pooling.mode not in POOLING_MODES:
        raise fail(
            f"unsupported pooling mode {m.pooling.mode!r}; one of {', '.join(POOLING_MODES)}"
        )
    if spec.quality.compare == "masked_argmax" and m.special_tokens.mask_token_id is None:
        raise fail(f"task {m.task} needs special_tokens.mask_token_id")
    if m.zero_shot is not None:
        n = len(m.labels or ())
        for name in ("entailment_id", "contradiction_id"):
            value = getattr(m.zero_shot, name)
            if not isinstance(value, int) or not 0 <= value < n:
                raise fail(f"zero_shot.{name} {value!r} is not a label index (0..{n - 1})")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _strings(value: Any, name: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} must be a list of strings")
    return list(value)


def _record(value: Any, cls: type, name: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object")
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - allowed
    if unknown:
        raise ValueError(f"{name} has unknown keys {sorted(unknown)}")
    return dict(value)


def read_manifest(model_dir: Path, check_files: bool = True) -> Manifest:
    """The checked manifest of an exported directory, its files included (unless the caller
    only describes the model, like the UDF generator, which may run without the weights)."""
    model_dir = Path(model_dir)
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(
            f"{model_dir} is not a model written by `exasol-mlflow-server export` "
            f"({MANIFEST_FILE} is missing)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    manifest = from_dict(data, str(path))
    for key in ("model_file", "tokenizer_file") if check_files else ():
        if not (model_dir / getattr(manifest, key)).is_file():
            raise ModelLoadError(f"{model_dir}: {key} {getattr(manifest, key)!r} is missing")
    return manifest


def write_manifest(model_dir: Path, manifest: Manifest) -> None:
    (Path(model_dir) / MANIFEST_FILE).write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")


def is_exported_dir(path: Path) -> bool:
    return (Path(path) / MANIFEST_FILE).is_file()
