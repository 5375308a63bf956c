"""The task contract: [pre-process] rows -> token sequences, [reduce] a micro-batch's raw outputs
-> one result per sequence, [post-process] results -> one prediction per input row.

``encode`` and ``decode`` run in the request's thread; ``reduce`` runs in the batcher thread on
micro-batches that mix sequences of different requests, so it must not depend on request params.
``reduce`` gets the ONNX outputs (float32) plus the batch's padded ``input_ids``, and the true
``lengths``; it should return small per-sequence results (they live until the request decodes).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..errors import BadRequest, InvalidParameter
from ..manifest import Manifest
from ..protocol import UNNAMED, Payload
from ..tokenize import Seq, TextTokenizer
from .spec import Column, Param, TaskSpec


@dataclass
class Encoded:
    """What ``encode`` hands to the batcher (``seqs``) and keeps for ``decode`` (``state``)."""

    seqs: list[Seq]
    state: Any = None


@dataclass(frozen=True)
class TaskOptions:
    label_only: bool = False
    max_new_tokens_limit: int = 256  # generative tasks: the most new tokens a request may ask for
    max_input_tokens: int = 0  # generative tasks: longest input (0 = the model's)


@dataclass
class TaskContext:
    manifest: Manifest
    tokenizer: TextTokenizer
    options: TaskOptions = field(default_factory=TaskOptions)


class Task(ABC):
    """Runs one encoder task; everything declarative about it is in its :class:`TaskSpec`."""

    spec: ClassVar[TaskSpec]
    # read from ``spec`` (set for each subclass), for the stages' convenience
    name: ClassVar[str]
    columns: ClassVar[tuple[Column, ...]]
    params_spec: ClassVar[tuple[Param, ...]]
    outputs: ClassVar[tuple[str, ...]]  # ONNX outputs that ``reduce`` needs

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls.name, cls.columns = spec.name, spec.columns
            cls.params_spec, cls.outputs = spec.params, spec.onnx_outputs

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.manifest = ctx.manifest
        self.tokenizer = ctx.tokenizer
        self.options = ctx.options

    # ---- schema -------------------------------------------------------------------------
    @classmethod
    def list_columns(cls) -> frozenset[str]:
        names: set[str] = set()
        for col in cls.columns:
            if col.is_list:
                names.update((col.name, *col.aliases))
        return frozenset(names)

    def select(self, payload: Payload) -> dict[str, list[Any]]:
        """Map the payload's columns onto this task's columns and check their types."""
        given = payload.columns
        out: dict[str, list[Any]] = {}
        single_unnamed = len(given) == 1 and len([c for c in self.columns if c.required]) == 1
        for col in self.columns:
            name = next((n for n in (col.name, *col.aliases) if n in given), None)
            if name is None and single_unnamed and col.required:
                name = next(
                    iter(given)
                )  # one column, one required input: take it whatever its name
            if name is None:
                if col.required:
                    expected = ", ".join(c.name for c in self.columns if c.required)
                    raise BadRequest(
                        f"Invalid input. Missing column {col.name!r} for task {self.name} "
                        f"(expected columns: {expected}; got: {', '.join(given) or 'none'})."
                    )
                continue
            values = given[name]
            if col.is_list:
                out[col.name] = [_as_label_list(v, col.name, i) for i, v in enumerate(values)]
            else:
                for i, v in enumerate(values):
                    if not isinstance(v, str):
                        raise BadRequest(
                            f"Invalid input. Column {col.name!r} row {i} must be a string, got "
                            f"{'null' if v is None else type(v).__name__}."
                        )
                out[col.name] = values
        return out

    def parse_params(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Known params with defaults; unknown keys are ignored (as MLflow does)."""
        out: dict[str, Any] = {}
        for spec in self.params_spec:
            value = raw.get(spec.name, spec.default)
            if value is not None and spec.type is not None:
                if spec.type in (int, float) and isinstance(value, bool):
                    raise InvalidParameter(
                        f"Invalid parameters found: {spec.name}={value!r} must be a number."
                    )
                if spec.type is float and isinstance(value, int):
                    value = float(value)
                if not isinstance(value, spec.type):
                    raise InvalidParameter(
                        f"Invalid parameters found: {spec.name}={value!r} must be of type "
                        f"{getattr(spec.type, '__name__', spec.type)}."
                    )
            if spec.choices is not None and value not in spec.choices:
                raise InvalidParameter(
                    f"Invalid parameters found: {spec.name}={value!r}; choose from {list(spec.choices)}."
                )
            out[spec.name] = value
        return out

    def shares_results(self, params: dict[str, Any]) -> bool:
        """May identical rows share one computed answer (dedup, result cache)? Yes, unless a
        task's answer is drawn at random (generation with sampling)."""
        return True

    # ---- stages -------------------------------------------------------------------------
    @abstractmethod
    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded: ...

    @abstractmethod
    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]: ...

    @abstractmethod
    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any: ...

    def warmup_payload(self) -> Payload:
        cols = {
            c.name: (["warm up"] if not c.is_list else [["a", "b"]])
            for c in self.columns
            if c.required
        }
        return Payload(cols, 1, {})

    # ---- helpers ------------------------------------------------------------------------
    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels or ())  # required for tasks with labels, at load


def _as_label_list(value: Any, column: str, row: int) -> list[str]:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise BadRequest(
                    f"Invalid input. Column {column!r} row {row} is not a valid JSON list."
                ) from None
        else:
            value = [part.strip() for part in text.split(",") if part.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise BadRequest(
            f"Invalid input. Column {column!r} row {row} must be a non-empty list of strings."
        )
    return value


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


__all__ = [
    "UNNAMED",
    "Column",
    "Encoded",
    "Param",
    "Task",
    "TaskContext",
    "TaskOptions",
    "sigmoid",
    "softmax",
]
