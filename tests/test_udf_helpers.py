"""Harness for the generated Exasol UDFs: cut the Python body out of the SQL, run it like the
real runtime would (strictly), and a tiny loopback HTTP stub/proxy for failure cases.

exasol-udf-mock-python is looser than Exasol's runtime (exasol-udf.md section 3): it defaults
``get_dataframe`` to all rows, returns None again after None, accepts empty DataFrames and numpy
scalars. :class:`StrictSetContext` raises where the runtime raises (E-UDF-CL-SL-PYTHON-1106,
-1087, -1098 and the scalar-context -1107). The tests at the bottom check the harness itself.
"""

from __future__ import annotations

import datetime
import decimal
import http.server
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest
from exasol_udf_mock_python.column import Column as MockColumn
from exasol_udf_mock_python.connection import Connection
from exasol_udf_mock_python.mock_exa_environment import MockExaEnvironment
from exasol_udf_mock_python.mock_meta_data import MockMetaData

PLAIN_TYPES = (int, float, str, bool, type(None), decimal.Decimal, datetime.date, datetime.datetime)


# ---------------------------------------------------------------------------------------------
# SQL -> scripts
# ---------------------------------------------------------------------------------------------
@dataclass
class ParsedScript:
    kind: str  # SET or SCALAR
    schema: str
    name: str
    inputs: list[tuple[str, str]]
    outputs: list[tuple[str, str]]  # EMITS columns, or [("RETURN", type)]
    options: list[str]  # %option lines
    body: str


def _balanced(text: str, start: int) -> tuple[str, int]:
    """Content of the parenthesis opening at ``text[start]`` and the index after it."""
    assert text[start] == "("
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
    out = []
    for part in parts:
        name, sql_type = part.strip().split(None, 1)
        out.append((name, sql_type.strip()))
    return out


def parse_scripts(sql: str) -> dict[str, ParsedScript]:
    """All ``CREATE ... PYTHON3 SET|SCALAR SCRIPT`` statements, keyed by SET/SCALAR."""
    scripts = {}
    for match in re.finditer(r"CREATE OR REPLACE PYTHON3 (SET|SCALAR) SCRIPT (\w+)\.(\w+)", sql):
        kind, schema, name = match.groups()
        params, pos = _balanced(sql, match.end())
        rest = sql[pos:]
        emits = re.match(r"\s*EMITS\s*", rest)
        if emits:
            out_text, after = _balanced(rest, emits.end())
            outputs = _columns(out_text)
            rest = rest[after:]
        else:
            returns = re.match(r"\s*RETURNS\s+(\S+)", rest)
            assert returns, "neither EMITS nor RETURNS"
            outputs = [("RETURN", returns.group(1))]
            rest = rest[returns.end() :]
        head = re.match(r"\s*AS\n", rest)
        assert head, "no AS after the signature"
        lines = rest[head.end() :].split("\n")
        end = lines.index("/")  # the script ends at a line holding only '/'
        options = [line for line in lines[:end] if line.startswith("%")]
        body = "\n".join(line for line in lines[:end] if not line.startswith("%"))
        scripts[kind] = ParsedScript(kind, schema, name, _columns(params), outputs, options, body)
    return scripts


def py_type(sql_type: str) -> type:
    upper = sql_type.upper()
    if upper.startswith(("VARCHAR", "CHAR")):
        return str
    if upper.startswith(("DOUBLE", "FLOAT", "REAL")):
        return float
    if upper.startswith("BOOL"):
        return bool
    scale = re.search(r",\s*(\d+)\s*\)", upper)
    if scale and int(scale.group(1)) > 0:
        return decimal.Decimal
    return int


# ---------------------------------------------------------------------------------------------
# strict contexts (behave like exaudfclient's exaiter where the mock is lenient)
# ---------------------------------------------------------------------------------------------
def check_value(value: Any, column: tuple[str, str]) -> None:
    """Like ``exaiter.emit``: exact Python types only (``type(v) ==``), matching the column."""
    name, sql_type = column
    kind = type(value)
    if kind not in PLAIN_TYPES:
        raise RuntimeError(f"E-UDF-CL-SL-PYTHON-1098: data type {kind} is not supported ({name})")
    if value is None:
        return
    expected = py_type(sql_type)
    allowed = {
        str: (str,),
        float: (float, int, decimal.Decimal),
        int: (int, decimal.Decimal),
        bool: (bool,),
        decimal.Decimal: (int, decimal.Decimal),
    }[expected]
    if kind not in allowed:
        raise RuntimeError(f"emit column {name!r} is of type {sql_type} but data is {kind}")
    if kind is float and value != value:
        raise RuntimeError(f"NaN emitted into {name!r}")


class StrictSetContext:
    """A SET/EMITS context over one group of rows."""

    def __init__(
        self, rows: Sequence[tuple], inputs: list[tuple[str, str]], outputs: list[tuple[str, str]]
    ) -> None:
        if not rows:
            raise ValueError("empty groups do not exist in Exasol")
        self.rows, self.inputs, self.outputs = list(rows), inputs, outputs
        self.pos = 0
        self.finished = False
        self.output: list[tuple] = []
        self.batch_sizes: list[int] = []

    def get_dataframe(self, *args: Any, **kwargs: Any) -> pd.DataFrame | None:
        if not args and "num_rows" not in kwargs:
            raise AssertionError("get_dataframe() without num_rows: the runtime default is 1 row")
        num_rows = args[0] if args else kwargs["num_rows"]
        start_col = kwargs.get("start_col", args[1] if len(args) > 1 else 0)
        if not (num_rows == "all" or (type(num_rows) is int and num_rows > 0)):
            raise RuntimeError("E-UDF-CL-SL-PYTHON-1103: 'num_rows' must be 'all' or an int > 0")
        if self.finished:
            raise RuntimeError("E-UDF-CL-SL-PYTHON-1106: Iteration finished")
        if self.pos >= len(self.rows):
            self.finished = True
            return None
        n = len(self.rows) if num_rows == "all" else num_rows
        chunk = self.rows[self.pos : self.pos + n]
        self.pos += len(chunk)
        self.batch_sizes.append(len(chunk))
        return self._frame(chunk, start_col)

    def _frame(self, chunk: list[tuple], start_col: int) -> pd.DataFrame:
        data = {}
        for j, (name, sql_type) in enumerate(self.inputs[start_col:], start_col):
            values = [row[j] for row in chunk]
            kind = py_type(sql_type)
            if kind is int and None not in values:
                data[name] = np.array(values, dtype=np.int64)
            elif kind in (int, float):  # NULL in a numeric column: float64 with NaN
                data[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
            else:
                data[name] = pd.Series(values, dtype=object)
        return pd.DataFrame(data)

    def emit(self, *values: Any) -> None:
        if len(values) == 1 and isinstance(values[0], pd.DataFrame):
            frame = values[0]
            if frame.shape[0] == 0:
                raise RuntimeError("E-UDF-CL-SL-PYTHON-1087: emit DataFrame is empty")
            rows = [tuple(r) for r in frame.itertuples(index=False, name=None)]
        else:
            rows = [values]
        for row in rows:
            if len(row) != len(self.outputs):
                raise TypeError(
                    f"E-UDF-CL-SL-PYTHON-1089: emit() takes exactly {len(self.outputs)} "
                    f"arguments ({len(row)} given)"
                )
            for value, column in zip(row, self.outputs, strict=True):
                check_value(value, column)
            self.output.append(tuple(row))

    def next(self, reset: bool = False) -> bool:
        raise AssertionError("the generated UDF reads with get_dataframe only")

    def size(self) -> int:
        return len(self.rows)


class StrictScalarContext:
    """A SCALAR/RETURNS context on one row: attributes by name; next/reset/emit disallowed."""

    def __init__(self, row: tuple, inputs: list[tuple[str, str]]) -> None:
        self._values = {name: value for (name, _), value in zip(inputs, row, strict=True)}

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__["_values"]
        if name not in values:
            raise RuntimeError(
                f"E-UDF-CL-SL-PYTHON-1085: Iterator has no object with name {name!r}"
            )
        return values[name]

    def _disallowed(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("F-UDF-CL-SL-PYTHON-1107: next(), reset() and emit() not allowed")

    next = reset = emit = _disallowed


# ---------------------------------------------------------------------------------------------
# one UDF "VM": the body exec'd once; run() per group / row; cleanup() at the end
# ---------------------------------------------------------------------------------------------
def mock_columns(columns: list[tuple[str, str]]) -> list[MockColumn]:
    return [MockColumn(name, py_type(sql_type), sql_type) for name, sql_type in columns]


class UdfVM:
    def __init__(
        self,
        sql: str,
        kind: str = "SET",
        connections: dict[str, Connection] | None = None,
        vm_id: str = "140245",
    ) -> None:
        self.script = parse_scripts(sql)[kind]
        meta = MockMetaData(
            script_code_wrapper_function=None,
            input_columns=mock_columns(self.script.inputs),
            input_type=kind,
            output_columns=mock_columns(self.script.outputs),
            output_type="EMITS" if kind == "SET" else "RETURNS",
            script_name=self.script.name,
            script_schema=self.script.schema,
            vm_id=vm_id,
        )
        self.exa = MockExaEnvironment(meta, connections=connections or {})
        self.namespace: dict[str, Any] = {"exa": self.exa, "__name__": "udf"}
        exec(compile(self.script.body, f"<{self.script.name}>", "exec"), self.namespace)
        self.contexts: list[StrictSetContext] = []

    def run_groups(self, groups: Iterable[Sequence[tuple]]) -> list[tuple]:
        out: list[tuple] = []
        for rows in groups:
            ctx = StrictSetContext(rows, self.script.inputs, self.script.outputs)
            self.contexts.append(ctx)
            result = self.namespace["run"](ctx)
            assert result is None, "a SET/EMITS run() returns nothing"
            out.extend(ctx.output)
        return out

    def run_scalar(self, rows: Iterable[tuple]) -> list[Any]:
        out = []
        for row in rows:
            value = self.namespace["run"](StrictScalarContext(row, self.script.inputs))
            check_value(value, self.script.outputs[0])
            out.append(value)
        return out

    def cleanup(self) -> None:
        self.namespace["cleanup"]()


# ---------------------------------------------------------------------------------------------
# loopback stub: scripted answers, else proxy to a real server
# ---------------------------------------------------------------------------------------------
Answer = tuple[int, dict[str, str], bytes]


class Stub:
    """``Stub(upstream, decide)``: ``decide(n, body, headers)`` returns an Answer or None (proxy).

    ``n`` counts POSTs from 1. Runs on a free loopback port in a daemon thread; ``close()``
    stops it. Every request is recorded in ``requests`` as (path, headers, body).
    """

    def __init__(
        self,
        upstream: str | None = None,
        decide: Callable[[int, bytes, dict[str, str]], Answer | None] | None = None,
    ) -> None:
        self.upstream, self.decide = upstream, decide
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()}
                with stub.lock:
                    stub.requests.append((self.path, headers, body))
                    n = len(stub.requests)
                answer = stub.decide(n, body, headers) if stub.decide else None
                if answer is None:
                    answer = stub.forward(self.path, headers, body)
                status, extra, data = answer
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def forward(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        if self.upstream is None:
            return json_answer(500, {"error_code": "INTERNAL_ERROR", "message": "no upstream"})
        keep = {k: v for k, v in headers.items() if k.lower() in ("content-type", "authorization")}
        request = urllib.request.Request(self.upstream + path, data=body, headers=keep)
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status, {"Content-Type": "application/json"}, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, {"Content-Type": "application/json"}, err.read()

    @property
    def posts(self) -> int:
        return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Stub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_answer(status: int, obj: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


# ---------------------------------------------------------------------------------------------
# self-tests of the harness (no server needed)
# ---------------------------------------------------------------------------------------------
INPUTS = [("id", "DECIMAL(18,0)"), ("text_data", "VARCHAR(2000000)")]
OUTPUTS = [*INPUTS, ("score", "DOUBLE"), ("error_message", "VARCHAR(2000000)")]


def test_strict_context_needs_num_rows_and_stops_after_none() -> None:
    ctx = StrictSetContext([(1, "a"), (2, None), (3, "c")], INPUTS, OUTPUTS)
    with pytest.raises(AssertionError, match="num_rows"):
        ctx.get_dataframe()
    first = ctx.get_dataframe(num_rows=2)
    assert list(first["id"]) == [1, 2] and first["text_data"][1] is None
    assert len(ctx.get_dataframe(num_rows=2)) == 1
    assert ctx.get_dataframe(num_rows=2) is None
    with pytest.raises(RuntimeError, match="1106"):
        ctx.get_dataframe(num_rows=2)


def test_strict_context_rejects_what_the_runtime_rejects() -> None:
    ctx = StrictSetContext([(1, "a")], INPUTS, OUTPUTS)
    ctx.emit(1, "a", 0.5, None)
    ctx.emit(1, "a", 1, None)  # an int into DOUBLE is fine in Exasol
    with pytest.raises(RuntimeError, match="1098"):
        ctx.emit(np.int64(1), "a", 0.5, None)
    with pytest.raises(RuntimeError, match="1098"):
        ctx.emit(1, "a", np.float64(0.5), None)
    with pytest.raises(RuntimeError, match="NaN"):
        ctx.emit(1, "a", float("nan"), None)
    with pytest.raises(RuntimeError, match="1087"):
        ctx.emit(pd.DataFrame({c: [] for c, _ in OUTPUTS}))
    with pytest.raises(TypeError, match="1089"):
        ctx.emit(1, "a", 0.5)
    with pytest.raises(RuntimeError):
        ctx.emit(1, 2, 0.5, None)  # an int into VARCHAR
    scalar = StrictScalarContext((1, "x"), INPUTS)
    assert scalar.text_data == "x"
    with pytest.raises(RuntimeError, match="1107"):
        scalar.emit("x")


def test_parse_scripts_cuts_body_and_signature() -> None:
    sql = (
        "-- x\nCREATE OR REPLACE PYTHON3 SET SCRIPT S.N(\n    id DECIMAL(18,0),\n    t VARCHAR(9)\n"
        ") EMITS (\n    id DECIMAL(18,0),\n    s DOUBLE\n) AS\n%perNodeAndCallInstanceLimit 2;\n"
        "def run(ctx):\n    pass\n/\n\nGRANT x;\n"
    )
    script = parse_scripts(sql)["SET"]
    assert (script.schema, script.name) == ("S", "N")
    assert script.inputs == [("id", "DECIMAL(18,0)"), ("t", "VARCHAR(9)")]
    assert script.outputs == [("id", "DECIMAL(18,0)"), ("s", "DOUBLE")]
    assert script.options == ["%perNodeAndCallInstanceLimit 2;"]
    assert script.body == "def run(ctx):\n    pass"


def test_stub_answers_then_proxies() -> None:
    def decide(n: int, body: bytes, headers: dict[str, str]) -> Answer | None:
        return json_answer(503, {"error_code": "TEMPORARILY_UNAVAILABLE"}, {"Retry-After": "0"})

    with Stub(None, decide) as stub:
        request = urllib.request.Request(stub.url + "/invocations", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 503 and info.value.headers["Retry-After"] == "0"
        assert stub.posts == 1


# ---------------------------------------------------------------------------------------------
# generating scripts
# ---------------------------------------------------------------------------------------------
def fake_model_dir(root: Any, task: str, **manifest: Any) -> Any:
    """A directory with just the manifest the generator reads (no model needed)."""
    path = root / task
    path.mkdir(parents=True, exist_ok=True)
    data = {"format_version": 1, "task": task, "labels": None, **manifest}
    (path / "exasol_model.json").write_text(json.dumps(data), encoding="utf-8")
    return path


def make_sql(model_dir: Any, **options: Any) -> str:
    from exasol_mlflow_server.udf.generator import UdfOptions, generate_sql
    from exasol_mlflow_server.udf.model_info import read_model_info

    options.setdefault("schema", "ML")
    return generate_sql(read_model_info(model_dir), UdfOptions(**options))


def connection(url: str, token: str | None = None) -> dict[str, Connection]:
    return {"MLFLOW_SERVER": Connection(address=url, user="", password=token or "")}
