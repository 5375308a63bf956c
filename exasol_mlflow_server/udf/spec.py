"""What the generated scripts look like per task: input parameters, output columns, defaults.

Input parameters are named like transformers-extension's UDFs (``text_data`` -- ``TEXT`` is a
reserved word in Exasol); ``request`` is the same input as the server's column name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEXT_TYPE = "VARCHAR(2000000)"
DOUBLE = "DOUBLE"
INTEGER = "DECIMAL(18,0)"
RANK = "DECIMAL(9,0)"


@dataclass(frozen=True)
class Param:
    name: str  # SQL parameter / Python attribute name
    request: str  # column name in the request to the server
    sql_type: str = TEXT_TYPE


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str


@dataclass(frozen=True)
class TaskSpec:
    task: str
    inputs: tuple[Param, ...]
    outputs: tuple[Column, ...]
    scalar_returns: str  # what the SCALAR script returns, for the SQL comment
    default_params: dict[str, Any] = field(default_factory=dict)

    @property
    def default_name(self) -> str:
        return self.task.upper().replace("-", "_")


TEXT = Param("text_data", "text")
TASK_SPECS: dict[str, TaskSpec] = {
    spec.task: spec
    for spec in (
        TaskSpec(
            "feature-extraction",
            (TEXT,),
            (Column("embedding", TEXT_TYPE),),
            "the embedding as a JSON array",
        ),
        TaskSpec(
            "text-classification",
            (TEXT,),
            (Column("label", TEXT_TYPE), Column("score", DOUBLE)),
            "the predicted label",
        ),
        TaskSpec(
            "token-classification",
            (TEXT,),
            (
                Column("start_pos", INTEGER),
                Column("end_pos", INTEGER),
                Column("word", TEXT_TYPE),
                Column("entity", TEXT_TYPE),
                Column("score", DOUBLE),
            ),
            "the entities as a JSON array of {start, end, word, entity, score}",
            {"aggregation_strategy": "simple"},
        ),
        TaskSpec(
            "question-answering",
            (Param("question", "question"), Param("context_text", "context")),
            (
                Column("answer", TEXT_TYPE),
                Column("score", DOUBLE),
                Column("start_pos", INTEGER),
                Column("end_pos", INTEGER),
            ),
            "the answer",
        ),
        TaskSpec(
            "zero-shot-classification",
            (TEXT, Param("candidate_labels", "candidate_labels")),
            (Column("label", TEXT_TYPE), Column("score", DOUBLE), Column("rank", RANK)),
            "the best candidate label",
        ),
        TaskSpec(
            "fill-mask",
            (TEXT,),
            (
                Column("filled_text", TEXT_TYPE),
                Column("token_str", TEXT_TYPE),
                Column("score", DOUBLE),
                Column("rank", RANK),
            ),
            "the text with the best token filled in",
        ),
    )
}


@dataclass(frozen=True)
class Script:
    name: str  # SCHEMA.NAME
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]  # EMITS columns; empty for the scalar script
    returns: str | None = None


def embedding_columns(dimension: int) -> tuple[Column, ...]:
    """``--embedding-format columns``: one DOUBLE per dimension, ``DIM_0`` .. ``DIM_{d-1}``."""
    return tuple(Column(f"DIM_{i}", DOUBLE) for i in range(dimension))
