"""The one table of what the generated scripts look like per task: inputs, outputs, how a
prediction becomes output rows, the per-row parameter columns.

Input parameters are named like transformers-extension's UDFs (``text_data`` -- ``TEXT`` is a
reserved word in Exasol); ``request`` is the same input as the server's column name. Each output
names where its value comes from in one prediction item (``source``), so the client library
(``templates/ems_client.py``) has no per-task code: it walks the prediction by ``shape``.

The task's request params come from the runtime's task classes through :func:`task_params`
(the coordinator re-points it at the task descriptors' ``TaskSpec.params``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TEXT_TYPE = "VARCHAR(2000000)"
DOUBLE = "DOUBLE"
INTEGER = "DECIMAL(18,0)"
RANK = "DECIMAL(9,0)"
OFFSET = "DECIMAL(9,0)"
RANK_SOURCE = "#rank"  # an output's source: its 1-based position in the prediction's list
VECTOR_SOURCE = "#vector"  # the whole prediction (an embedding)
# per-row parameter columns: the SQL type for a param's Python type
PARAM_SQL_TYPES = {int: "DECIMAL(9,0)", float: DOUBLE, bool: "BOOLEAN", str: "VARCHAR(2000)"}


@dataclass(frozen=True)
class Input:
    name: str  # SQL parameter / Python attribute name
    request: str  # column name in the request to the server
    sql_type: str = TEXT_TYPE


@dataclass(frozen=True)
class Output:
    name: str
    sql_type: str
    source: str  # key in a prediction item; "a|b": the first present; RANK_SOURCE; VECTOR_SOURCE
    kind: str  # how the value is emitted: str | float | int | json
    echoes_input: bool = False  # the input again (fill-mask's filled text): left out by --key-only


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str


@dataclass(frozen=True)
class TaskSpec:
    task: str
    inputs: tuple[Input, ...]
    outputs: tuple[Output, ...]
    # How one row's prediction becomes output rows: "items" (an object, or a list of objects:
    # one row each), "parallel" (an object of equally long lists: one row per position),
    # "groups" (a list of objects, or a list of such lists: one row per object), "vector".
    shape: str
    scalar: (
        str  # the SCALAR script's value: "first" output of the first row | "json" rows | "vector"
    )
    scalar_returns: str  # what the SCALAR script returns, for the SQL comment
    per_row: tuple[str, ...] = ()  # request params that may come as a per-row column
    default_params: dict[str, Any] = field(default_factory=dict)

    @property
    def default_name(self) -> str:
        return self.task.upper().replace("-", "_")


@dataclass(frozen=True)
class ParamColumn:
    """A request param of a task, and whether the scripts can take it as a per-row column."""

    name: str
    sql_type: str | None  # None: no SQL type (a list param)
    kind: str  # str | int | float | bool: how a column value is sent
    default: Any
    choices: tuple[Any, ...] | None
    per_row: bool


def _score(name: str = "score") -> Output:
    return Output(name, DOUBLE, "score", "float")


RANK_OUT = Output("rank", RANK, RANK_SOURCE, "int")
TEXT = Input("text_data", "text")
TASK_SPECS: dict[str, TaskSpec] = {
    spec.task: spec
    for spec in (
        TaskSpec(
            "feature-extraction",
            (TEXT,),
            (Output("embedding", TEXT_TYPE, VECTOR_SOURCE, "json"),),
            "vector",
            "vector",
            "the embedding as a JSON array",
        ),
        TaskSpec(
            "text-classification",
            (TEXT,),
            (Output("label", TEXT_TYPE, "label", "str"), _score(), RANK_OUT),
            "items",
            "first",
            "the predicted label",
            per_row=("top_k", "function_to_apply"),
        ),
        TaskSpec(
            "token-classification",
            (TEXT,),
            (
                Output("start_pos", OFFSET, "start", "int"),
                Output("end_pos", OFFSET, "end", "int"),
                Output("word", TEXT_TYPE, "word", "str"),
                Output("entity", TEXT_TYPE, "entity_group|entity", "str"),
                _score(),
            ),
            "items",
            "json",
            "the entities as a JSON array of {start_pos, end_pos, word, entity, score}",
            per_row=("aggregation_strategy",),
            default_params={"aggregation_strategy": "simple"},
        ),
        TaskSpec(
            "question-answering",
            (Input("question", "question"), Input("context_text", "context")),
            (
                Output("answer", TEXT_TYPE, "answer", "str"),
                _score(),
                Output("start_pos", OFFSET, "start", "int"),
                Output("end_pos", OFFSET, "end", "int"),
                RANK_OUT,
            ),
            "items",
            "first",
            "the answer",
            per_row=("top_k", "max_answer_len", "handle_impossible_answer"),
        ),
        TaskSpec(
            "zero-shot-classification",
            (TEXT, Input("candidate_labels", "candidate_labels")),
            (
                Output("label", TEXT_TYPE, "labels", "str"),
                Output("score", DOUBLE, "scores", "float"),
                RANK_OUT,
            ),
            "parallel",
            "first",
            "the best candidate label",
            per_row=("hypothesis_template", "multi_label"),
        ),
        TaskSpec(
            "fill-mask",
            (TEXT,),
            (
                Output("filled_text", TEXT_TYPE, "sequence", "str", echoes_input=True),
                Output("token_str", TEXT_TYPE, "token_str", "str"),
                _score(),
                RANK_OUT,
            ),
            "groups",
            "first",
            "the text with the best token filled in",
            per_row=("top_k",),
        ),
    )
}


def task_params(task: str) -> tuple[ParamColumn, ...]:
    """The request params of ``task``, from the runtime task class's ``params_spec``.

    The one place the UDF generator reads them: once the task descriptors carry
    ``TaskSpec.params`` with ``per_row``, this returns those (``per_row`` from the descriptor
    instead of :attr:`TaskSpec.per_row`).
    """
    from exasol_mlflow_server.runtime.tasks import task_class

    per_row = TASK_SPECS[task].per_row
    out = []
    for param in task_class(task).params_spec:
        kinds = param.type if isinstance(param.type, tuple) else (param.type,)
        sql_type = PARAM_SQL_TYPES.get(kinds[0]) if len(kinds) == 1 else None
        kind = kinds[0].__name__ if sql_type else "str"
        out.append(
            ParamColumn(
                param.name,
                sql_type,
                kind,
                param.default,
                param.choices,
                param.name in per_row and sql_type is not None,
            )
        )
    return tuple(out)


@dataclass(frozen=True)
class Script:
    name: str  # SCHEMA.NAME
    inputs: tuple[Column, ...]
    outputs: tuple[Column, ...]  # EMITS columns; empty for the scalar script
    returns: str | None = None


def embedding_columns(dimension: int) -> tuple[Column, ...]:
    """``--embedding-format columns``: one DOUBLE per dimension, ``DIM_0`` .. ``DIM_{d-1}``."""
    return tuple(Column(f"DIM_{i}", DOUBLE) for i in range(dimension))
