"""What the generated scripts look like per task -- inputs, outputs, how a prediction becomes
output rows, the per-row parameter columns -- derived from each task's descriptor
(``runtime/tasks/<task>.py``: ``SPEC.udf``, its columns and its params).

Input parameters are named like transformers-extension's UDFs (``text_data`` -- ``TEXT`` is a
reserved word in Exasol); ``request`` is the same input as the server's column name. Each output
names where its value comes from in one prediction item (``source``), so the client library
(``templates/ems_client.py``) has no per-task code: it walks the prediction by ``shape``.

"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from exasol_mlflow_server.runtime.tasks import all_specs, task_spec
from exasol_mlflow_server.runtime.tasks.spec import (
    DOUBLE_SQL,
    INTEGER_SQL,
    OFFSET_SQL,
    RANK_SQL,
    TEXT_SQL,
    UdfOutput,
)

TEXT_TYPE = TEXT_SQL
DOUBLE = DOUBLE_SQL
INTEGER = INTEGER_SQL
RANK = RANK_SQL
OFFSET = OFFSET_SQL
# per-row parameter columns: the SQL type for a param's Python type
PARAM_SQL_TYPES = {int: "DECIMAL(9,0)", float: DOUBLE, bool: "BOOLEAN", str: "VARCHAR(2000)"}


@dataclass(frozen=True)
class Input:
    name: str  # SQL parameter / Python attribute name
    request: str  # column name in the request to the server
    sql_type: str = TEXT_TYPE


Output = UdfOutput  # one EMITS column and where its value comes from (the task SPEC says)


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


def _from_descriptor(task: Any) -> TaskSpec:
    """The scripts' view of a task, from its descriptor (``SPEC.udf``, columns and params)."""
    columns = {c.name: c for c in task.columns}
    udf = task.udf
    return TaskSpec(
        task.name,
        tuple(Input(columns[name].udf_name, name) for name in udf.inputs),
        tuple(udf.outputs),
        udf.shape,
        udf.scalar,
        udf.scalar_returns,
        per_row=tuple(p.name for p in task.params if p.per_row),
        default_params=dict(udf.defaults),
    )


TASK_SPECS: dict[str, TaskSpec] = {task.name: _from_descriptor(task) for task in all_specs()}


def task_params(task: str) -> tuple[ParamColumn, ...]:
    """The request params of ``task``, from its descriptor (``SPEC.params``, ``per_row`` flags)."""
    per_row = TASK_SPECS[task].per_row
    out = []
    for param in task_spec(task).params:
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
