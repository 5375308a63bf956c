"""Helpers for the UDF tests -- generating SQL, a VM of the strict runtime (tests/exasol_runtime.py)
for a model's script, exasol-udf-mock-python with ``import_script``, and a loopback HTTP stub that
answers from a script, hangs, or proxies to a real server -- and the tests of the harness itself:
it must behave like Exasol's runtime where the mock does not."""

from __future__ import annotations

import datetime
import decimal
import http.server
import json
import threading
import time
import types
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tests.exasol_runtime import Connection, UdfVM, parse_scripts

HANG = (0, {}, b"")  # an Answer: accept the request and never answer it


# ---------------------------------------------------------------------------------------------
# generating scripts
# ---------------------------------------------------------------------------------------------
def fake_model_dir(root: Any, task: str, **manifest: Any) -> Any:
    """A directory with just the manifest the generator reads (no model needed)."""
    path = root / task
    path.mkdir(parents=True, exist_ok=True)
    needs = {  # what the manifest reader requires of these tasks
        "text-classification": {"labels": ["NEGATIVE", "POSITIVE"]},
        "token-classification": {"labels": ["O", "B-PER"]},
        "zero-shot-classification": {"labels": ["contradiction", "neutral", "entailment"]},
        "fill-mask": {"special_tokens": {"mask_token": "[MASK]", "mask_token_id": 103}},
    }
    data = {"format_version": 1, "task": task, **needs.get(task, {}), **manifest}
    (path / "exasol_model.json").write_text(json.dumps(data), encoding="utf-8")
    return path


def make_sql(model_dir: Any, **options: Any) -> str:
    from exasol_mlflow_server.udf.generator import UdfOptions, generate_sql
    from exasol_mlflow_server.udf.model_info import read_model_info

    options.setdefault("schema", "ML")
    if "param_columns" in options:
        options["param_columns"] = tuple(options["param_columns"])
    return generate_sql(read_model_info(model_dir), UdfOptions(**options))


def connection(url: str, token: str | None = None) -> dict[str, Connection]:
    return {"MLFLOW_SERVER": Connection(url, "", token or "")}


def model_script(sql: str, kind: str = "SET") -> str:
    """The qualified name of the model's SET or SCALAR script (not the library)."""
    names = [n for n, s in parse_scripts(sql).items() if s.kind == kind and s.inputs]
    assert len(names) == 1, names
    return names[0]


def model_vm(sql: str, kind: str = "SET", **kwargs: Any) -> UdfVM:
    return UdfVM(sql, model_script(sql, kind), **kwargs)


def mock_exa(sql: str, kind: str, connections: dict[str, Any]) -> Any:
    """exasol-udf-mock-python's environment for a model script, with the ``import_script`` the
    mock lacks (what users of the mock add to test the generated scripts)."""
    from exasol_udf_mock_python.column import Column
    from exasol_udf_mock_python.mock_exa_environment import MockExaEnvironment
    from exasol_udf_mock_python.mock_meta_data import MockMetaData

    from tests.exasol_runtime import sql_type

    scripts = parse_scripts(sql)
    script = scripts[model_script(sql, kind)]

    def columns(cols: list[tuple[str, str]]) -> list[Column]:
        kinds = {"STRING": str, "DOUBLE": float, "BOOLEAN": bool}
        return [Column(n, kinds.get(sql_type(t).kind, int), t) for n, t in cols]

    class Exa(MockExaEnvironment):
        def import_script(self, name: str) -> types.ModuleType:
            module = types.ModuleType(name)
            module.__dict__["exa"] = self
            exec(compile(scripts[name.upper()].body, name, "exec"), module.__dict__)
            return module

    meta = MockMetaData(
        script_code_wrapper_function=None,
        input_columns=columns(script.inputs),
        input_type=kind,
        output_columns=columns(script.outputs),
        output_type="EMITS" if kind == "SET" else "RETURNS",
        script_name=script.name,
        script_schema=script.schema,
        vm_id="77",
    )
    exa = Exa(meta, connections=connections)
    namespace: dict[str, Any] = {"exa": exa}
    exec(compile(script.body, script.name, "exec"), namespace)
    return exa, namespace


# ---------------------------------------------------------------------------------------------
# loopback stub: scripted answers, a hang, else proxy to a real server
# ---------------------------------------------------------------------------------------------
Answer = tuple[int, dict[str, str], bytes]


class Stub:
    """``Stub(upstream, decide)``: ``decide(n, body, headers)`` returns an Answer, HANG or None
    (proxy). ``n`` counts POSTs from 1; ``ping(n)`` answers GET /ping the same way (default 200).
    Runs on a free loopback port in daemon threads; ``close()`` stops it and releases hung
    requests. Every POST is recorded in ``requests`` as (path, headers, body)."""

    def __init__(
        self,
        upstream: str | None = None,
        decide: Callable[[int, bytes, dict[str, str]], Answer | None] | None = None,
        ping: Callable[[int], Answer | None] | None = None,
        ssl_context: Any = None,
    ) -> None:
        self.upstream, self.decide, self.ping = upstream, decide, ping
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.pings = 0
        self.lock = threading.Lock()
        self.closing = threading.Event()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self, answer: Answer) -> None:
                if answer is HANG:
                    stub.closing.wait(30)
                    self.close_connection = True
                    return
                status, extra, data = answer
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                with stub.lock:
                    stub.pings += 1
                    n = stub.pings
                answer = stub.ping(n) if stub.ping else None
                self.answer(answer or json_answer(200, {"status": "ok"}))

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items()}
                with stub.lock:
                    stub.requests.append((self.path, headers, body))
                    n = len(stub.requests)
                answer = stub.decide(n, body, headers) if stub.decide else None
                self.answer(
                    answer if answer is not None else stub.forward(self.path, headers, body)
                )

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        scheme = "http"
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
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

    def sent_rows(self) -> list[list[list[str]]]:
        return [json.loads(body)["dataframe_split"]["data"] for _, _, body in self.requests]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Stub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def json_answer(status: int, obj: Any, headers: dict[str, str] | None = None) -> Answer:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


# ---------------------------------------------------------------------------------------------
# self-tests of the harness: it behaves like Exasol's runtime (no server needed)
# ---------------------------------------------------------------------------------------------
PROBE_SQL = """--/
CREATE OR REPLACE PYTHON3 SET SCRIPT S.PROBE(
    id DECIMAL(18,0),
    big DECIMAL(36,0),
    amount DECIMAL(10,2),
    x DOUBLE,
    flag BOOLEAN,
    t TIMESTAMP,
    d DATE,
    s VARCHAR(10)
) EMITS (
    id DECIMAL(18,0),
    s VARCHAR(3),
    x DOUBLE
) AS
%perNodeAndCallInstanceLimit 2;
def run(ctx):
    pass
/
"""
WHEN = datetime.datetime(2024, 1, 2, 3, 4, 5, 123000)
ROWS = [
    (2**53 + 1, 12345678901234567890123, decimal.Decimal("1.25"), 0.5, True, WHEN,
     datetime.date(2024, 1, 2), "abc"),
    (None, None, None, None, None, None, None, ""),
    (7, 1, decimal.Decimal("-3.10"), 2.0, False, WHEN, datetime.date(2024, 1, 3), None),
]  # fmt: skip


def probe_context(rows: list[tuple] = ROWS) -> Any:
    from tests.exasol_runtime import Context

    return Context(rows, parse_scripts(PROBE_SQL)["S.PROBE"], "SET")


def test_get_dataframe_infers_dtypes_per_batch_like_exasol() -> None:
    """pd.DataFrame(list_of_rows): a NULL turns DECIMAL(18,0) into float64 (2**53+1 rounded),
    DECIMAL(36,0) and DECIMAL(10,2) come as Decimal, TIMESTAMP as datetime64, '' as None."""
    ctx = probe_context()
    with pytest.raises(RuntimeError, match="1103"):
        ctx.get_dataframe(num_rows=0)
    first = ctx.get_dataframe()  # the default is ONE row
    assert len(first) == 1 and first["id"].dtype == np.int64 and first["id"][0] == 2**53 + 1
    rest = ctx.get_dataframe(num_rows=10)
    assert rest["id"].dtype == np.float64 and np.isnan(rest["id"][0])
    assert ctx.get_dataframe(num_rows=10) is None
    with pytest.raises(RuntimeError, match="1106"):
        ctx.get_dataframe(num_rows=10)

    frame = probe_context().get_dataframe(num_rows="all")
    assert frame["id"].dtype == np.float64 and int(frame["id"][0]) == 2**53  # rounded!
    assert frame["big"].dtype == object and frame["big"][0] == decimal.Decimal(ROWS[0][1])
    assert type(frame["amount"][0]) is decimal.Decimal and frame["big"][1] is None
    assert frame["x"].dtype == np.float64 and np.isnan(frame["x"][1])
    assert frame["flag"].dtype == object and frame["flag"][1] is None
    assert str(frame["t"].dtype).startswith("datetime64") and pd.isna(frame["t"][1])
    assert type(frame["d"][0]) is datetime.date
    assert frame["s"][1] is None and frame["s"][2] is None  # '' is NULL
    assert list(frame.columns) == ["id", "big", "amount", "x", "flag", "t", "d", "s"]


def test_row_access_is_exact_and_iterates_like_exaiter() -> None:
    ctx = probe_context()
    assert ctx.size() == 3
    assert ctx.id == 2**53 + 1 and type(ctx.id) is int
    assert ctx.big == 12345678901234567890123 and type(ctx.big) is int  # NUMERIC scale 0: int
    assert ctx.amount == decimal.Decimal("1.25") and ctx[5] == WHEN
    assert ctx.next() and ctx.id is None and ctx.s is None
    assert ctx.next() and not ctx.next()
    with pytest.raises(RuntimeError, match="1084"):
        _ = ctx.id
    with pytest.raises(RuntimeError, match="1085"):
        _ = probe_context().nope
    empty = probe_context([])
    assert empty.size() == 0 and empty.id is None and not empty.next()


def test_emit_checks_types_like_exaiter() -> None:
    ctx = probe_context()
    ctx.emit(2**53 + 1, "abc", 1)  # an int into DOUBLE is fine
    ctx.emit(decimal.Decimal(5), "", None)  # '' is stored as NULL
    assert ctx.output == [(2**53 + 1, "abc", 1.0), (5, None, None)]
    bad = [
        ((np.int64(1), "a", 0.5), "1098"),
        ((1, "a", np.float64(0.5)), "1098"),
        ((1, 2, 0.5), "1091"),
        ((1.5, "a", 0.5), None),  # a float into DECIMAL(18,0) is accepted (truncated by Exasol)
        ((1, "abcd", 0.5), "characters"),  # longer than VARCHAR(3)
        ((10**18, "a", 0.5), "does not fit"),
        ((1, "a", float("nan")), "NaN"),
    ]
    for values, error in bad:
        if error is None:
            ctx.emit(*values)
            continue
        with pytest.raises(RuntimeError, match=error):
            ctx.emit(*values)
    with pytest.raises(TypeError, match="1089"):
        ctx.emit(1, "a")
    with pytest.raises(RuntimeError, match="1087"):
        ctx.emit(pd.DataFrame({"id": [], "s": [], "x": []}))
    ctx.emit(pd.DataFrame({"id": [1, 2], "s": ["a", None], "x": [np.nan, 0.25]}))
    assert ctx.output[-2:] == [(1, "a", None), (2, None, 0.25)]


def test_parse_scripts_needs_delimiters_and_strips_options() -> None:
    script = parse_scripts(PROBE_SQL)["S.PROBE"]
    assert script.inputs[0] == ("id", "DECIMAL(18,0)") and script.outputs[-1] == ("x", "DOUBLE")
    assert script.options == ["%perNodeAndCallInstanceLimit 2;"]
    assert script.body == "def run(ctx):\n    pass"
    with pytest.raises(AssertionError, match="--/"):
        parse_scripts(PROBE_SQL.replace("--/\n", ""))


def test_import_script_and_connections_like_the_runtime() -> None:
    library = "--/\nCREATE OR REPLACE PYTHON3 SCALAR SCRIPT S.LIB() RETURNS INT AS\nX = 42\n/\n"
    user = (
        "--/\nCREATE OR REPLACE PYTHON3 SCALAR SCRIPT S.USER(a VARCHAR(9)) RETURNS INT AS\n"
        "LIB = exa.import_script('s.lib')\ndef run(ctx):\n"
        "    return LIB.X + len(exa.get_connection('c').address)\n/\n"
    )
    vm = UdfVM(library + user, "S.USER", connections={"C": Connection("http://x")})
    assert vm.run_scalar([("a",)]) == [42 + 8]
    assert vm.exa.import_script("S.LIB") is vm.exa.import_script("LIB")  # cached per VM
    assert vm.exa.meta.output_type == "RETURN" and vm.exa.meta.node_id == 0
    with pytest.raises(ImportError, match="1119"):
        vm.exa.import_script("S.MISSING")
    with pytest.raises(ImportError, match="1121"):
        vm.exa.get_connection("OTHER")
    ctx_error = UdfVM(library + user, "S.USER", connections={})
    with pytest.raises(ImportError, match="1121"):
        ctx_error.run_scalar([("a",)])


def test_stub_answers_hangs_and_pings() -> None:
    def decide(n: int, body: bytes, headers: dict[str, str]) -> Answer | None:
        if n == 1:
            return json_answer(503, {"error_code": "TEMPORARILY_UNAVAILABLE"}, {"Retry-After": "0"})
        return HANG

    with Stub(None, decide) as stub:
        request = urllib.request.Request(stub.url + "/invocations", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 503 and info.value.headers["Retry-After"] == "0"
        start = time.monotonic()
        with pytest.raises(OSError):  # a timeout: nothing comes back
            urllib.request.urlopen(request, timeout=0.3)
        assert time.monotonic() - start < 3
        with urllib.request.urlopen(stub.url + "/ping", timeout=5) as resp:
            assert resp.status == 200
        assert stub.posts == 2 and stub.pings == 1
