"""text-classification: ``{"label", "score"}`` per row, like transformers' pipeline.

``top_k`` absent/null gives the best label per row; ``top_k=k`` a list of the k best; ``top_k=0``
(or negative) all labels, best first. ``text_pair`` makes it a pair classifier. With the serve
option ``--label-only`` each prediction is the plain label string.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tokenize import to_seq
from .base import Encoded, Task, sigmoid, softmax
from .spec import (
    DOUBLE_SQL,
    RANK_SOURCE,
    RANK_SQL,
    TEXT_SQL,
    Column,
    Field,
    Param,
    Quality,
    TaskSpec,
    UdfOutput,
    UdfSpec,
)

SPEC = TaskSpec(
    name="text-classification",
    kind="encoder",
    columns=(
        Column("text", aliases=("inputs", "sequences", "text_data"), sql_name="text_data"),
        Column("text_pair", required=False),
    ),
    params=(
        Param("top_k", int, None, per_row=True, help="null: the best label; k: the k best; 0: all"),
        Param(
            "function_to_apply",
            str,
            None,
            per_row=True,
            choices=(None, "softmax", "sigmoid", "none"),
            help="default: sigmoid for multi-label or one-label models, else softmax",
        ),
    ),
    outputs=(Field("label", "string"), Field("score", "double")),
    mlflow_tasks=("text-classification", "sentiment-analysis"),
    export_task="text-classification",
    has_labels=True,
    quality=Quality("argmax", "label_agreement"),
    udf=UdfSpec(
        ("text",),
        (
            UdfOutput("label", TEXT_SQL, "label", "str"),
            UdfOutput("score", DOUBLE_SQL, "score", "float"),
            UdfOutput("rank", RANK_SQL, RANK_SOURCE, "int"),
        ),
        "items",
        "first",
        "the predicted label",
    ),
    example={
        "columns": ["text"],
        "data": [["Exasol is an in-memory analytics database."], ["Hello world"]],
    },
    onnx_outputs=("logits",),
)


class TextClassification(Task):
    spec = SPEC

    def default_function(self) -> str:
        if self.manifest.problem_type == "multi_label_classification" or len(self.labels) == 1:
            return "sigmoid"
        return "softmax"

    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded:
        pairs = columns.get("text_pair")
        return Encoded([to_seq(e) for e in self.tokenizer.encode(columns["text"], pairs)])

    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]:
        return list(outputs["logits"])

    def scores(self, results: list[Any], params: dict[str, Any]) -> np.ndarray:
        logits = np.stack(results).astype(np.float32)
        fn = params.get("function_to_apply") or self.default_function()
        if fn == "softmax":
            return softmax(logits)
        if fn == "sigmoid":
            return sigmoid(logits)
        return logits

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        scores = self.scores(results, params)
        labels = self.labels
        top_k = params.get("top_k")
        if top_k is None:
            best = scores.argmax(axis=1)
            if self.options.label_only:
                return [labels[i] for i in best]
            return [
                {"label": labels[i], "score": float(s[i])}
                for i, s in zip(best, scores, strict=True)
            ]
        k = len(labels) if top_k <= 0 else min(top_k, len(labels))
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [
            [{"label": labels[i], "score": float(s[i])} for i in row]
            for row, s in zip(order, scores, strict=True)
        ]
