"""feature-extraction: one pooled (and by default L2-normalised) sentence embedding per row.

Better than MLflow's transformers flavor, which returns the token-level hidden states of the
first input only: this is what sentence-transformers' ``encode`` returns, for every row.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..manifest import Pooling
from ..tokenize import to_seq
from .base import Encoded, Task
from .spec import (
    TEXT_SQL,
    VECTOR_SOURCE,
    Column,
    Field,
    Param,
    Quality,
    TaskSpec,
    UdfOutput,
    UdfSpec,
)

SPEC = TaskSpec(
    name="feature-extraction",
    kind="encoder",
    columns=(
        Column(
            "text", aliases=("inputs", "sentences", "sequences", "text_data"), sql_name="text_data"
        ),
    ),
    params=(
        Param("normalize", bool, None, help="L2-normalise (default: as the model was trained)"),
    ),
    outputs=(
        Field(
            "embedding", {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, -1]}}
        ),
    ),
    mlflow_tasks=("feature-extraction", "sentence-similarity", "llm/v1/embeddings"),
    export_task="feature-extraction",
    has_labels=False,
    quality=Quality("pooled_cosine", "cosine_min"),
    udf=UdfSpec(
        ("text",),
        (UdfOutput("embedding", TEXT_SQL, VECTOR_SOURCE, "json"),),
        "vector",
        "vector",
        "the embedding as a JSON array",
    ),
    example={
        "columns": ["text"],
        "data": [["Exasol is an in-memory analytics database."], ["Hello world"]],
    },
    onnx_outputs=("last_hidden_state",),
)


class FeatureExtraction(Task):
    spec = SPEC

    def __init__(self, ctx) -> None:
        super().__init__(ctx)
        pooling = self.manifest.pooling or Pooling()  # the mode was checked when it was read
        self.mode, self.normalize = pooling.mode, pooling.normalize

    def encode(self, columns: dict[str, list[Any]], params: dict[str, Any]) -> Encoded:
        return Encoded([to_seq(e) for e in self.tokenizer.encode(columns["text"])])

    def reduce(self, outputs: dict[str, np.ndarray], lengths: np.ndarray) -> list[Any]:
        hidden = outputs["last_hidden_state"]  # (B, T, H)
        mask = (np.arange(hidden.shape[1])[None, :] < lengths[:, None]).astype(hidden.dtype)
        if self.mode == "mean":
            pooled = np.einsum("bth,bt->bh", hidden, mask) / np.maximum(
                mask.sum(1, keepdims=True), 1e-9
            )
        elif self.mode == "cls":
            pooled = hidden[:, 0]
        elif self.mode == "max":
            pooled = np.where(mask[:, :, None] > 0, hidden, -np.inf).max(axis=1)
        else:  # lasttoken
            pooled = hidden[np.arange(len(lengths)), lengths - 1]
        return list(np.ascontiguousarray(pooled, dtype=np.float32))

    def decode(self, encoded: Encoded, results: list[Any], params: dict[str, Any]) -> Any:
        vectors = np.stack(results)
        normalize = self.normalize if params.get("normalize") is None else params["normalize"]
        if normalize:
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors
