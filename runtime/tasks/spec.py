"""The task descriptor: one :class:`TaskSpec` per task, from which everything else derives.

Each task module (``runtime/tasks/<task>.py``) holds its ``SPEC`` beside the class that runs it.
The runtime reads columns and params from it; the exporter its export task, whether it has labels,
the MLmodel signature, the input example and the quality metric; the MLflow import its
transformers-flavor task names; the UDF generator its SQL columns. Adding a task is one new module
and one line in the registry (``runtime/tasks/__init__.py``).

A leaf module: dataclasses only, so every layer can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TEXT_SQL = "VARCHAR(2000000)"
DOUBLE_SQL = "DOUBLE"
INTEGER_SQL = "DECIMAL(18,0)"
RANK_SQL = "DECIMAL(9,0)"
OFFSET_SQL = "DECIMAL(9,0)"  # a character offset

SCHEMA_TYPES = {bool: "boolean", int: "long", float: "double", str: "string"}


@dataclass(frozen=True)
class Column:
    """An input column of a request."""

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = True
    is_list: bool = False  # a per-row list of strings (candidate_labels)
    sql_name: str | None = None  # UDF parameter name when ``name`` is an Exasol keyword

    @property
    def udf_name(self) -> str:
        return self.sql_name or self.name


@dataclass(frozen=True)
class Param:
    """A request param (MLflow ``params``)."""

    name: str
    type: type | tuple[type, ...]  # Python type(s) accepted
    default: Any
    choices: tuple[Any, ...] | None = None
    shape: tuple[int, ...] | None = None  # (-1,) for list params
    per_row: bool = False  # may come as a per-row column in the UDF
    help: str = ""

    @property
    def schema_type(self) -> str:
        """MLflow ParamSchema type (the first Python type that maps; lists give their items)."""
        kinds = self.type if isinstance(self.type, tuple) else (self.type,)
        return next((SCHEMA_TYPES[k] for k in kinds if k in SCHEMA_TYPES), "string")


@dataclass(frozen=True)
class Field:
    """One output field of a prediction: an MLmodel signature output (and an OIP v2 output)."""

    name: str
    type: (
        str | Mapping[str, Any]
    )  # MLflow ColSpec type, or {"type": "array"|"object"|"tensor", ...}
    required: bool = True


RANK_SOURCE = "#rank"  # a UDF output's source: its 1-based position in the prediction's list
VECTOR_SOURCE = "#vector"  # the whole prediction (an embedding)


@dataclass(frozen=True)
class UdfOutput:
    """One EMITS column of the SET script and where its value comes from in a prediction."""

    name: str
    sql_type: str
    source: str  # key in a prediction item; "a|b": the first present; RANK_SOURCE; VECTOR_SOURCE
    kind: str  # how the value is emitted: str | float | int | json
    echoes_input: bool = False  # the input again (fill-mask's filled text): left out by --key-only


@dataclass(frozen=True)
class UdfSpec:
    """What the generated Exasol scripts send and emit for the task."""

    inputs: tuple[str, ...]  # the columns the scripts take (SQL name: Column.udf_name)
    outputs: tuple[UdfOutput, ...]  # EMITS columns of the SET script (besides key, inputs, error)
    # how one row's prediction becomes output rows: "items" (an object, or a list of objects:
    # one row each), "parallel" (an object of equally long lists: one row per position),
    # "groups" (a list of objects, or a list of such lists: one row per object), "vector"
    shape: str
    scalar: str  # the SCALAR script's value: "first" output of the first row | "json" | "vector"
    scalar_returns: str  # what the SCALAR script returns (for the SQL comment)
    defaults: Mapping[str, Any] = field(default_factory=dict)  # params the scripts send


@dataclass(frozen=True)
class Quality:
    """How the exporter compares the ONNX model with PyTorch on validation texts."""

    compare: str  # pooled_cosine | argmax | token_argmax | span_argmax | masked_argmax | generate
    metric: str  # the primary metric key of quality.json (the --min-quality gate)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    kind: str  # "encoder": one forward pass per row | "generative": a decoding loop
    columns: tuple[Column, ...]
    params: tuple[Param, ...]
    outputs: tuple[Field, ...]
    mlflow_tasks: tuple[str, ...]  # transformers-flavor pipeline tasks served as this task
    export_task: str  # the task optimum's TasksManager exports
    has_labels: bool
    quality: Quality
    udf: UdfSpec
    example: Mapping[str, Any]  # pandas-split input example {"columns": [...], "data": [[...]]}
    onnx_outputs: tuple[str, ...] = ()  # the ONNX outputs the runtime needs

    @property
    def required_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.required)

    @property
    def single_text(self) -> bool:
        """One string per row is the input: the MLmodel signature's one unnamed column, as in
        MLflow's transformers flavor, so pyfunc takes a list of strings (optional extra columns,
        like text_pair, are then only for the REST server, which does not enforce the schema)."""
        return len(self.required_columns) == 1 and not any(c.is_list for c in self.columns)

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)


__all__ = [
    "DOUBLE_SQL",
    "INTEGER_SQL",
    "OFFSET_SQL",
    "RANK_SOURCE",
    "RANK_SQL",
    "TEXT_SQL",
    "VECTOR_SOURCE",
    "Column",
    "Field",
    "Param",
    "Quality",
    "TaskSpec",
    "UdfOutput",
    "UdfSpec",
]
