"""Render the SQL of the `udf` subcommand: connection, client library, SET and SCALAR scripts,
grants and examples.

The client code lives once, in the library script (``templates/ems_http.py`` and
``templates/ems_rows.py`` joined); each model's scripts are ``templates/script.py`` with their
SETTINGS, which load the library with ``exa.import_script``. Everything task-specific comes
from :mod:`.spec`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from .model_info import ModelInfo, UdfError
from .settings import UdfOptions
from .spec import (
    TASK_SPECS,
    Column,
    Output,
    ParamColumn,
    Script,
    TaskSpec,
    embedding_columns,
    task_params,
)
from .sql_text import connection_sql, examples, grants, header, library_header

API_VERSION = 1  # equals the library's API_VERSION (a test checks it)
LIBRARY_PARTS = ("templates/ems_http.py", "templates/ems_rows.py")
PART_IMPORT = re.compile(r"^from ems_http import [^\n]*\n", re.MULTILINE)
SETTINGS_START = "# ---- settings (written by"
SETTINGS_END = "# ---- end of settings ----"
ERROR_COLUMN = Column("error_message", "VARCHAR(2000000)")


def _template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text("utf-8")


def library_code() -> str:
    """The library's Python code: its parts joined (part 2's import of part 1 dropped)."""
    parts = [PART_IMPORT.sub("", _template(name)).strip("\n") for name in LIBRARY_PARTS]
    return _checked("\n\n\n".join(parts) + "\n")


def _checked(code: str) -> str:
    if any(line.strip() == "/" for line in code.splitlines()):
        raise UdfError("internal error: the UDF code contains a line with a lone '/'")
    return code


INTEGER_TYPES = ("DECIMAL", "NUMERIC", "NUMBER", "INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT")


def integer_key(sql_type: str) -> bool:
    """An exact integer type (MOD(key, K) works on it)."""
    base = sql_type.strip().upper().split("(")[0].strip()
    scale = re.search(r",\s*(\d+)\s*\)", sql_type)
    return base in INTEGER_TYPES and (scale is None or int(scale.group(1)) == 0)


def library_name(options: UdfOptions) -> str:
    name = options.library.upper()
    return name if "." in name else f"{options.schema.upper()}.{name}"


def library_sql(options: UdfOptions) -> str:
    return (
        f"--/\nCREATE OR REPLACE PYTHON3 SCALAR SCRIPT {library_name(options)}() RETURNS INT AS\n"
        + library_code()
        + "/\n"
    )


def render_stub(settings: dict[str, Any], library: str) -> str:
    """``templates/script.py`` with ``settings`` and the library name written into it."""
    text = _template("templates/script.py")
    start, end = text.index(SETTINGS_START), text.index(SETTINGS_END)
    block = [f"{SETTINGS_START} `exasol-mlflow-server udf` {__version__}) ----", "SETTINGS = {"]
    block += [f"    {key!r}: {value!r}," for key, value in settings.items()]
    block += ["}", f"LIBRARY, API_VERSION = {library!r}, {API_VERSION}", ""]
    return _checked(text[:start] + "\n".join(block) + text[end:])


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
    return "--/\n" + head + limit + body + "/\n"


def param_columns(spec: TaskSpec, options: UdfOptions) -> tuple[ParamColumn, ...]:
    available = {p.name: p for p in task_params(spec.task) if p.per_row}
    wanted = list(dict.fromkeys(options.param_columns))
    if wanted == ["all"]:
        return tuple(available.values())
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise UdfError(
            f"--param-columns: {spec.task} has no per-row parameter {', '.join(unknown)} "
            f"(it has: {', '.join(available) or 'none'})"
        )
    return tuple(available[name] for name in wanted)


def _check_names(script: Script, key: Column) -> None:
    """Exasol compares unquoted names case-insensitively: no two columns may share one."""
    for side, columns in (("input", script.inputs), ("output", script.outputs)):
        others = [c for c in columns if c is not key]
        clash = next((c for c in others if c.name.upper() == key.name.upper()), None)
        if clash is not None:
            raise UdfError(
                f"--key-column {key.name} clashes with the {side} column {clash.name} of "
                f"{script.name}; choose another key name"
            )
        names = [c.name.upper() for c in columns]
        double = next((n for n in names if names.count(n) > 1), None)
        if double is not None:
            raise UdfError(f"two {side} columns of {script.name} are named {double}")


@dataclass(frozen=True)
class ModelScripts:
    set_script: Script
    scalar: Script
    set_settings: dict[str, Any]
    scalar_settings: dict[str, Any]


def _ca_pem(path: str | None) -> str | None:
    if not path:
        return None
    try:
        pem = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise UdfError(f"--ca-bundle: cannot read {path}: {exc}") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise UdfError(f"--ca-bundle: {path} holds no PEM certificate")
    return pem


def model_scripts(spec: TaskSpec, info: ModelInfo, options: UdfOptions) -> ModelScripts:
    name = f"{options.schema}.{(options.name or spec.default_name).upper()}"
    if name.upper() == library_name(options):
        raise UdfError(f"--name {options.name} is the name of the client library (--library)")
    key = Column(options.key_column, options.key_type.strip())
    params = param_columns(spec, options)
    inputs = (
        *(Column(i.name, i.sql_type) for i in spec.inputs),
        *(Column(p.name, p.sql_type or "") for p in params),
    )
    outputs: tuple[Output, ...] = spec.outputs
    if options.key_only:
        outputs = tuple(o for o in outputs if not o.echoes_input)
    dimension = None
    out_columns = tuple(Column(o.name, o.sql_type) for o in outputs)
    if spec.shape == "vector" and options.embedding_format == "columns":
        dimension = options.dimension or info.dimension
        if not dimension:
            raise UdfError(
                "--embedding-format columns needs the embedding dimension: the model has no "
                "config.json hidden_size; pass --dimension D"
            )
        out_columns = embedding_columns(dimension)
    echoed = () if options.key_only else inputs
    set_script = Script(name, (key, *inputs), (key, *echoed, *out_columns, ERROR_COLUMN))
    scalar = Script(f"{name}_SCALAR", inputs, (), "VARCHAR(2000000)")
    _check_names(set_script, key)
    common = {
        "task": spec.task,
        "connection": options.connection,
        "inputs": [[i.name, i.request] for i in spec.inputs],
        "param_columns": [[p.name, p.name, p.kind] for p in params],
        "params": {**spec.default_params, **options.params},
        "shape": spec.shape,
        "connect_timeout": float(options.connect_timeout),
        "timeout": float(options.timeout),
        "retries": options.retries,
        "backoff": float(options.backoff),
        "tls_verify": options.tls_verify,
        "ca_path": options.ca_bundle_path,
        "ca_pem": _ca_pem(options.ca_bundle),
    }
    set_settings = {
        "mode": "set",
        **common,
        "key": key.name,
        "echo": not options.key_only,
        "batch_rows": options.batch_size,
        "batch_bytes": options.max_batch_bytes,
        "outputs": [[o.name, o.source, o.kind] for o in outputs],
        "dimension": dimension,
    }
    scalar_settings = {
        "mode": "scalar",
        **common,
        "scalar": spec.scalar,
        "outputs": [[o.name, o.source, o.kind] for o in spec.outputs],
        "dimension": None,
    }
    return ModelScripts(set_script, scalar, set_settings, scalar_settings)


def generate_sql(info: ModelInfo, options: UdfOptions) -> str:
    options.validate()
    spec = TASK_SPECS[info.task]
    library = library_name(options)
    if options.library_only:
        return library_header(library, __version__) + library_sql(options)
    scripts = model_scripts(spec, info, options)
    set_script, scalar = scripts.set_script, scripts.scalar
    parts = [header(info, spec, options, __version__), connection_sql(options)]
    if not options.no_library:
        parts.append(
            f"-- 2. The client library {library}: the code of the scripts below, once per schema\n"
            f"--    (API version {API_VERSION}; `--no-library` leaves it out, `--library-only` "
            "prints only it).\n" + library_sql(options)
        )
    parts += [
        "-- 3. SET script: reads the group row by row, sends batches of up to "
        f"{options.batch_size} rows / {options.max_batch_bytes} bytes,\n"
        "--    one POST /invocations each; emits the key"
        f"{'' if options.key_only else ', the inputs'}, the outputs and error_message "
        "(NULL when the row was scored).\n"
        + script_sql(set_script, render_stub(scripts.set_settings, library), options),
        f"-- 4. SCALAR script: one request per row (for a few rows); returns {spec.scalar_returns}."
        "\n--    NULL input or a row the server rejects -> NULL; an unreachable server or a wrong "
        "token fails the query.\n"
        + script_sql(scalar, render_stub(scripts.scalar_settings, library), options),
        grants(options, (set_script.name, scalar.name), library),
        examples(options, set_script, scalar, integer_key(options.key_type)),
    ]
    return "\n".join(part.rstrip("\n") + "\n" for part in parts)


__all__ = ["Script", "UdfOptions", "generate_sql", "library_code", "render_stub"]
