"""A strict stand-in for Exasol's Python 3 UDF runtime, to run the generated SQL's scripts.

Modelled on exasol/script-languages (commit adddd1f5), not on exasol-udf-mock-python:
- ``exaudfclient/base/python/exascript_python_wrap.py``: ``exaiter`` -- ``ctx.<col>``/``ctx[i]``,
  ``next``/``reset``/``size``, ``get_dataframe`` (default 1 row; E-...-1103..1106) and ``emit``
  with its exact ``type(v) ==`` checks (E-...-1089..1098); a SCALAR script's next/reset/emit
  raise F-...-1107;
- ``python3/python_ext_dataframe.cc``: ``get_dataframe`` collects the rows as Python objects
  (NUMERIC as ``decimal.Decimal`` whatever its scale, DATE ``datetime.date``, TIMESTAMP
  ``datetime.datetime``) and calls ``pd.DataFrame(list_of_rows, columns=names)``, so pandas
  infers the dtypes per batch (a NULL in a DECIMAL(18,0) column makes it float64);
- ``exascript_python_preset_core.py``: ``exa.meta`` (output_type ``"EMIT"``/``"RETURN"``, int
  node ids), ``exa.get_connection`` (ImportError F-...-1121), ``exa.import_script`` (ImportError
  F-...-1119; modules cached per VM by code, with ``exa`` in their globals).
Column types follow the database: DECIMAL(p,0) is INT32 for p <= 9, INT64 for p <= 18, else
NUMERIC; INTEGER is DECIMAL(18,0), BIGINT DECIMAL(36,0). Table values go in as a SELECT would see
them (``''`` is NULL), emitted values come out as they would be stored (checked against the
column: VARCHAR length, DECIMAL precision, no NaN; ``''`` becomes NULL).
An empty input (a SET script without GROUP BY on an empty table) calls ``run`` once with
``size() == 0``; its one "row" reads as all NULL.
"""

from __future__ import annotations

import re
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tests.exasol_types import (
    Column,
    check_emit,
    frame_rows,
    frame_value,
    row_value,
    sql_type,
    stored,
)


# ---------------------------------------------------------------------------------------------
# SQL text -> scripts
# ---------------------------------------------------------------------------------------------
@dataclass
class ParsedScript:
    kind: str  # SET or SCALAR
    schema: str
    name: str
    inputs: list[tuple[str, str]]
    outputs: list[tuple[str, str]]  # EMITS columns, or [("RETURN", type)]
    options: list[str]  # %option lines
    body: str  # the code as Exasol runs it (option lines removed)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}".upper()


def _balanced(text: str, start: int) -> tuple[str, int]:
    depth = 0
    for i in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return text[start + 1 : i], i + 1
    raise ValueError("unbalanced parentheses")


def _columns(text: str) -> list[tuple[str, str]]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [tuple(p.strip().split(None, 1)) for p in parts if p.strip()]  # type: ignore[misc]


CREATE = re.compile(r"^CREATE OR REPLACE PYTHON3 (SET|SCALAR) SCRIPT (\w+)\.(\w+)", re.MULTILINE)


def parse_scripts(sql: str) -> dict[str, ParsedScript]:
    """Every ``CREATE ... PYTHON3 SET|SCALAR SCRIPT`` of ``sql`` by ``SCHEMA.NAME``; each must be
    wrapped in ``--/`` ... ``/`` lines (what SQL clients that split on ';' need)."""
    scripts = {}
    for match in CREATE.finditer(sql):
        kind, schema, name = match.groups()
        before = sql[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        assert before == "--/", f"{schema}.{name} is not preceded by a '--/' line"
        params, pos = _balanced(sql, match.end())
        rest = sql[pos:]
        emits = re.match(r"\s*EMITS\s*", rest)
        if emits:
            out_text, after = _balanced(rest, emits.end())
            outputs, rest = _columns(out_text), rest[after:]
        else:
            returns = re.match(r"\s*RETURNS\s+(\S+)", rest)
            assert returns, "neither EMITS nor RETURNS"
            outputs, rest = [("RETURN", returns.group(1))], rest[returns.end() :]
        head = re.match(r"\s*AS\n", rest)
        assert head, "no AS after the signature"
        lines = rest[head.end() :].split("\n")
        end = lines.index("/")  # the script ends at a line holding only '/'
        options = [line for line in lines[:end] if line.startswith("%")]
        body = "\n".join(line for line in lines[:end] if not line.startswith("%"))
        script = ParsedScript(kind, schema, name, _columns(params), outputs, options, body)
        scripts[script.qualified] = script
    return scripts


# ---------------------------------------------------------------------------------------------
# the runtime objects
# ---------------------------------------------------------------------------------------------
class Connection:
    def __init__(self, address: str, user: str = "", password: str = "", type: str = "password"):
        self.type, self.address, self.user, self.password = type, address, user, password


class Context:
    """``exaiter`` over one group (SET) or one row (SCALAR)."""

    def __init__(self, rows: Sequence[tuple], script: ParsedScript, kind: str) -> None:
        self._inputs = [(n, sql_type(t)) for n, t in script.inputs]
        self._outputs = [(n, sql_type(t)) for n, t in script.outputs]
        self._rows = [self._table_row(r, i) for i, r in enumerate(rows)]
        self._empty = not self._rows
        if self._empty:  # called once for an empty input; the "row" reads as NULLs
            self._rows = [tuple(None for _ in self._inputs)]
        self._kind, self._pos = kind, 0
        self._finished = self._dataframe_finished = False
        self.output: list[tuple] = []
        self.frames: list[pd.DataFrame] = []

    def _table_row(self, row: tuple, index: int) -> tuple:
        assert len(row) == len(self._inputs), f"row {index} has {len(row)} values"
        return tuple(
            stored(v, t, f"input row {index} {n}")
            for v, (n, t) in zip(row, self._inputs, strict=True)
        )

    def _value(self, key: Any) -> Any:
        if self._finished:
            raise RuntimeError("E-UDF-CL-SL-PYTHON-1084: Iteration finished")
        names = [n for n, _ in self._inputs]
        index = key if isinstance(key, int) else names.index(key) if key in names else None
        if index is None:
            raise RuntimeError(f"E-UDF-CL-SL-PYTHON-1085: Iterator has no object with name '{key}'")
        return row_value(self._rows[self._pos][index], self._inputs[index][1])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._value(name)

    def __getitem__(self, key: Any) -> Any:
        return self._value(key)

    def _scalar_only(self) -> None:
        if self._kind == "SCALAR":
            raise RuntimeError(
                "F-UDF-CL-SL-PYTHON-1107: next(), reset() and emit() functions are not allowed "
                "in scalar context"
            )

    def next(self, reset: bool = False) -> bool:
        self._scalar_only()
        if reset:
            self._pos, self._finished = 0, False
            return True
        if self._finished:
            return False
        if self._empty or self._pos + 1 >= len(self._rows):
            self._finished = True
            return False
        self._pos += 1
        return True

    def reset(self) -> bool:
        self._dataframe_finished = False
        return self.next(reset=True)

    def size(self) -> int:
        return 0 if self._empty else len(self._rows)

    def get_dataframe(self, num_rows: Any = 1, start_col: int = 0) -> pd.DataFrame | None:
        if not (num_rows == "all" or (type(num_rows) is int and num_rows > 0)):
            raise RuntimeError(
                "E-UDF-CL-SL-PYTHON-1103: get_dataframe() parameter 'num_rows' must be 'all' or "
                "an integer > 0"
            )
        if type(start_col) is not int or not 0 <= start_col <= len(self._inputs):
            raise RuntimeError("E-UDF-CL-SL-PYTHON-1104: bad 'start_col'")
        if self._dataframe_finished:
            raise RuntimeError("E-UDF-CL-SL-PYTHON-1106: Iteration finished")
        if self._finished:
            self._dataframe_finished = True
            return None
        n = len(self._rows) if num_rows == "all" else num_rows
        if self._kind == "SCALAR":
            n = 1
        data = []
        for _ in range(n):
            row = self._rows[self._pos]
            data.append(
                [frame_value(row[j], t) for j, (_, t) in enumerate(self._inputs)][start_col:]
            )
            if self._kind == "SCALAR":
                break
            if not self.next():
                break
        frame = pd.DataFrame(data, columns=[name for name, _ in self._inputs[start_col:]])
        self.frames.append(frame)
        return frame

    def emit(self, *values: Any) -> None:
        self._scalar_only()
        if len(values) == 1 and isinstance(values[0], pd.DataFrame):
            frame = values[0]
            if frame.shape[0] == 0:
                raise RuntimeError("E-UDF-CL-SL-PYTHON-1087: emit DataFrame is empty")
            if frame.shape[1] != len(self._outputs):
                raise TypeError("E-UDF-CL-SL-PYTHON-1088: emit() column count mismatch")
            self.output += [check_emit(row, self._outputs) for row in frame_rows(frame)]
            return
        self.output.append(check_emit(values, self._outputs))

    def returned(self, value: Any) -> Any:
        return check_emit((value,), self._outputs)[0]


@dataclass
class Exa:
    """The ``exa`` object of one VM running ``script``."""

    vm: UdfVM
    script: ParsedScript
    meta: Any = None
    _modules: dict[str, types.ModuleType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s, vm = self.script, self.vm
        self.meta = types.SimpleNamespace(
            database_name="EXA_DB",
            database_version="7.1.29",
            script_language="Python 3.8.10",
            script_name=s.name,
            script_schema=s.schema,
            script_code=s.body,
            current_user="SYS",
            scope_user="SYS",
            current_schema=s.schema,
            session_id="1789654321987654321",
            statement_id=7,
            node_count=vm.node_count,
            node_id=vm.node_id,
            vm_id=vm.vm_id,
            memory_limit=4 * 1024**3,
            input_type=s.kind,
            output_type="EMIT" if s.outputs[0][0] != "RETURN" else "RETURN",
            input_column_count=len(s.inputs),
            input_columns=[Column(n, sql_type(t)) for n, t in s.inputs],
            output_column_count=len(s.outputs),
            output_columns=[Column(n, sql_type(t)) for n, t in s.outputs],
        )

    def get_connection(self, name: str) -> Connection:
        conn = self.vm.connections.get(str(name).upper())
        if conn is None:
            raise ImportError(
                f"F-UDF-CL-SL-PYTHON-1121: get_connection for connection name {name} failed: "
                f"connection {str(name).upper()} does not exist or insufficient privileges"
            )
        return conn

    def import_script(self, name: str) -> types.ModuleType:
        parts = [p if p.startswith('"') else p.upper() for p in str(name).split(".")]
        qualified = ".".join([self.script.schema.upper(), *parts] if len(parts) == 1 else parts)
        script = self.vm.scripts.get(qualified.replace('"', ""))
        if script is None:
            raise ImportError(
                f"F-UDF-CL-SL-PYTHON-1119: Importing module {name} failed: script "
                f"{qualified} not found"
            )
        if script.body not in self._modules:
            module = types.ModuleType(str(name))
            module.__file__ = f"<{name}>"
            module.__dict__["exa"] = self
            self._modules[script.body] = module
            exec(compile(script.body, str(name), "exec"), module.__dict__)
        return self._modules[script.body]


class UdfVM:
    """One UDF VM running one script of ``sql``: the code runs once, then ``run`` per group
    (SET) or row (SCALAR), and ``cleanup`` at the end."""

    def __init__(
        self,
        sql: str,
        script: str,
        connections: dict[str, Connection] | None = None,
        vm_id: str = "140245",
        node_id: int = 0,
        node_count: int = 1,
        extra_sql: Iterable[str] = (),
    ) -> None:
        self.scripts = parse_scripts(sql)
        for more in extra_sql:
            self.scripts.update(parse_scripts(more))
        self.script = self.scripts[script.upper()]
        self.connections = {k.upper(): v for k, v in (connections or {}).items()}
        self.vm_id, self.node_id, self.node_count = vm_id, node_id, node_count
        self.exa = Exa(self, self.script)
        self.namespace: dict[str, Any] = {"exa": self.exa, "__name__": "__main__"}
        exec(compile(self.script.body, self.script.name, "exec"), self.namespace)
        self.contexts: list[Context] = []

    def run_groups(self, groups: Iterable[Sequence[tuple]]) -> list[tuple]:
        assert self.script.kind == "SET"
        out: list[tuple] = []
        for rows in groups:
            ctx = Context(rows, self.script, "SET")
            self.contexts.append(ctx)
            result = self.namespace["run"](ctx)
            assert result is None, "a SET ... EMITS run() returns nothing"
            out.extend(ctx.output)
        return out

    def run_scalar(self, rows: Iterable[tuple]) -> list[Any]:
        assert self.script.kind == "SCALAR"
        out = []
        for row in rows:
            ctx = Context([row], self.script, "SCALAR")
            out.append(ctx.returned(self.namespace["run"](ctx)))
        return out

    def cleanup(self) -> None:
        self.namespace["cleanup"]()
