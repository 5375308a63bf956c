"""Render the SQL of the `udf` subcommand: connection, SET and SCALAR scripts, grants, examples.

The Python body of both scripts is ``templates/udf_body.py`` with its SETTINGS block replaced;
everything task-specific in the SQL comes from :mod:`.spec`.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from .. import __version__
from .model_info import ModelInfo, UdfError
from .settings import UdfOptions
from .spec import TASK_SPECS, Column, Script, TaskSpec, embedding_columns
from .sql_text import connection_sql, examples, grants, header

SETTINGS_START = "# ---- settings (written by"
SETTINGS_END = "# ---- end of settings ----"
INTEGER_TYPES = ("DECIMAL", "NUMERIC", "NUMBER", "INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT")
FLOAT_TYPES = ("DOUBLE", "FLOAT", "REAL")


def key_kind(sql_type: str) -> str:
    base = sql_type.strip().upper().split("(")[0].strip()
    if base in FLOAT_TYPES:
        return "float"
    if base in INTEGER_TYPES:
        match = re.search(r",\s*(\d+)\s*\)", sql_type)
        return "int" if match is None or int(match.group(1)) == 0 else "any"
    return "any"


def output_columns(spec: TaskSpec, info: ModelInfo, options: UdfOptions) -> tuple[Column, ...]:
    if spec.task == "feature-extraction" and options.embedding_format == "columns":
        dimension = options.dimension or info.dimension
        if not dimension:
            raise UdfError(
                "--embedding-format columns needs the embedding dimension: the model has no "
                "config.json hidden_size; pass --dimension D"
            )
        return embedding_columns(dimension)
    return spec.outputs


def body_template() -> str:
    return resources.files(__package__).joinpath("templates/udf_body.py").read_text("utf-8")


def render_body(settings: dict[str, Any]) -> str:
    """The UDF body with ``settings`` written into its SETTINGS block."""
    text = body_template()
    start, end = text.index(SETTINGS_START), text.index(SETTINGS_END)
    block = f"{SETTINGS_START} `exasol-mlflow-server udf`) ----\n"
    block += "SETTINGS: dict[str, Any] = {\n"
    block += "".join(f"    {key!r}: {value!r},\n" for key, value in settings.items()) + "}"
    body = text[:start] + block + "\n" + text[end:]
    if any(line.strip() == "/" for line in body.splitlines()):
        raise UdfError("internal error: the UDF body contains a line with a lone '/'")
    return body.rstrip() + "\n"


def body_settings(
    spec: TaskSpec, options: UdfOptions, outputs: tuple[Column, ...], mode: str
) -> dict[str, Any]:
    return {
        "task": spec.task,
        "mode": mode,
        "connection": options.connection,
        "key_kind": key_kind(options.key_type),
        "inputs": [p.name for p in spec.inputs],
        "columns": [p.request for p in spec.inputs],
        "n_outputs": len(outputs),
        "batch_size": options.batch_size,
        "connect_timeout": float(options.connect_timeout),
        "read_timeout": float(options.timeout),
        "retries": options.retries,
        "backoff": float(options.backoff),
        "max_backoff": 10.0,
        "max_retry_after": 30.0,
        "params": {**spec.default_params, **options.params},
        "embedding_format": options.embedding_format,
        "dimension": len(outputs) if options.embedding_format == "columns" else None,
    }


def _columns_sql(columns: tuple[Column, ...]) -> str:
    return ",\n".join(f"    {c.name} {c.sql_type}" for c in columns)


def script_sql(script: Script, body: str, options: UdfOptions) -> str:
    limit = ""
    if options.instances_per_node:
        limit = f"%perNodeAndCallInstanceLimit {options.instances_per_node};\n"
    if script.returns is None:
        head = (
            f"CREATE OR REPLACE PYTHON3 SET SCRIPT {script.name}(\n{_columns_sql(script.inputs)}\n"
            f") EMITS (\n{_columns_sql(script.outputs)}\n) AS\n"
        )
    else:
        params = ", ".join(f"{c.name} {c.sql_type}" for c in script.inputs)
        head = (
            f"CREATE OR REPLACE PYTHON3 SCALAR SCRIPT {script.name}({params})\n"
            f"RETURNS {script.returns} AS\n"
        )
    return head + limit + body + "/\n"


def generate_sql(info: ModelInfo, options: UdfOptions) -> str:
    options.validate()
    spec = TASK_SPECS[info.task]
    name = (options.name or spec.default_name).upper()
    key = Column(options.key_column, options.key_type.strip())
    inputs = tuple(Column(p.name, p.sql_type) for p in spec.inputs)
    if key.name.lower() in {c.name.lower() for c in inputs}:
        raise UdfError(f"--key-column {key.name} clashes with an input column of the script")
    outputs = output_columns(spec, info, options)
    set_script = Script(
        f"{options.schema}.{name}",
        (key, *inputs),
        (key, *inputs, *outputs, Column("error_message", "VARCHAR(2000000)")),
    )
    scalar = Script(f"{options.schema}.{name}_SCALAR", inputs, (), "VARCHAR(2000000)")
    set_body = render_body(body_settings(spec, options, outputs, "set"))
    scalar_body = render_body(body_settings(spec, options, outputs, "scalar"))
    parts = [
        header(info, spec, options, __version__),
        connection_sql(options),
        "-- 2. SET script: reads the group in batches of "
        f"{options.batch_size} rows, one POST /invocations per batch;\n"
        "--    emits the key and inputs, the outputs and error_message (NULL when the row was "
        "scored).\n" + script_sql(set_script, set_body, options),
        "-- 3. SCALAR script: one request per row (simple, slow for many rows); returns "
        f"{spec.scalar_returns}.\n"
        "--    NULL input or a row the server rejects -> NULL; an unreachable server or a wrong "
        "token fails the query.\n" + script_sql(scalar, scalar_body, options),
        grants(options, (set_script.name, scalar.name)),
        examples(spec, options, set_script, scalar, key_kind(options.key_type) == "int"),
    ]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


__all__ = ["Script", "UdfOptions", "generate_sql", "render_body"]
