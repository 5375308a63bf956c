"""The generated scripts' behaviour against scripted loopback stubs, under the strict runtime
(tests/exasol_runtime.py; fast, no model needed): batching by rows and bytes, exact keys of every
type with NULLs, '' is NULL, retries and Retry-After, bisection of 400 batches, 401 without
retries, failover, per-row params, key-only output, the connection, the token and the library."""

from __future__ import annotations

import datetime
import decimal
import json
import time
from typing import Any

import pytest

from tests.serverproc import free_port
from tests.test_udf_helpers import (
    Answer,
    Stub,
    connection,
    fake_model_dir,
    json_answer,
    make_sql,
    model_vm,
)

TOKEN = "s3cr3t-token-value-7f1c"
FAST = {"retries": 2, "backoff": 0.01, "connect_timeout": 2.0, "timeout": 10.0}


def fake_prediction(text: str, top_k: int | None = None) -> Any:
    best = {"label": "LONG" if len(text) > 3 else "SHORT", "score": len(text) / 100}
    if top_k is None:
        return best
    other = {"label": "SHORT" if best["label"] == "LONG" else "LONG", "score": 0.001}
    return [best, other][:top_k]


def fake_model(n: int, body: bytes, headers: dict[str, str]) -> Answer:
    """A text-classification 'server': rejects rows containing POISON like a real 400."""
    if headers.get("Authorization") != f"Bearer {TOKEN}":
        return json_answer(401, {"error_code": "UNAUTHENTICATED", "message": "Missing or invalid"})
    request = json.loads(body)
    rows, top_k = request["dataframe_split"]["data"], request.get("params", {}).get("top_k")
    for i, (text,) in enumerate(rows):
        if "POISON" in text:
            message = f"Invalid input. Row {i} is poisoned."
            return json_answer(400, {"error_code": "BAD_REQUEST", "message": message})
    return json_answer(200, {"predictions": [fake_prediction(t, top_k) for (t,) in rows]})


def then_model(first: int, status: int, headers: dict[str, str] | None = None) -> Any:
    """The first ``first`` POSTs get ``status``, then the fake model answers."""

    def decide(n: int, body: bytes, hdrs: dict[str, str]) -> Answer:
        if n <= first:
            return json_answer(
                status, {"error_code": "X", "message": f"scripted {status}"}, headers
            )
        return fake_model(n, body, hdrs)

    return decide


@pytest.fixture()
def sql(tmp_path) -> Any:
    def build(**options: Any) -> str:
        model = fake_model_dir(tmp_path, "text-classification", labels=["SHORT", "LONG"])
        return make_sql(model, **{**FAST, **options})

    return build


ROWS = [(i, f"text number {i}" if i % 4 else "abc") for i in range(1, 12)]


def expected(rows: list[tuple]) -> list[tuple]:
    return [(k, t, *fake_prediction(t).values(), 1, None) for k, t in rows]


def test_batches_groups_and_keep_alive(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = model_vm(sql(batch_size=4), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([ROWS[:7], ROWS[7:]])
        vm.cleanup()
    assert out == expected(ROWS)
    assert [len(rows) for rows in stub.sent_rows()] == [4, 3, 4]
    assert all(h["Content-Type"] == "application/json" for _, h, _ in stub.requests)
    assert {path for path, _, _ in stub.requests} == {"/invocations"}
    assert all(ctx.frames == [] for ctx in vm.contexts)  # rows are read with next(), exactly


def test_null_and_empty_string_inputs(sql) -> None:
    """In Exasol '' is NULL: it reaches the script as None and is not sent."""
    rows = [(1, None), (2, ""), (None, "key is null"), (4, "four")]
    with Stub(decide=fake_model) as stub:
        out = model_vm(sql(batch_size=3), connections=connection(stub.url, TOKEN)).run_groups(
            [rows]
        )
    assert out[0] == (1, None, None, None, None, "input is NULL: text_data")
    assert out[1] == (2, None, None, None, None, "input is NULL: text_data")
    assert out[2] == (None, "key is null", "LONG", 0.11, 1, None)
    assert out[3] == (4, "four", "LONG", 0.04, 1, None)
    assert stub.sent_rows() == [[["key is null"]], [["four"]]]  # NULL rows are never sent


def test_all_rows_null_sends_nothing_and_empty_input_emits_nothing(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = model_vm(sql(batch_size=2), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([[(1, None), (2, None), (3, None)]])
        assert [r[-1] for r in out] == ["input is NULL: text_data"] * 3
        assert vm.run_groups([[]]) == []  # a SET script without GROUP BY on an empty table
    assert stub.posts == 0


KEY_TYPES = [
    ("DECIMAL(18,0)", [2**53 + 1, None, 10**18 - 1, -(2**53) - 3, 0]),
    ("DECIMAL(36,0)", [12345678901234567890123, None, 10**35 + 7, 1]),
    ("BIGINT", [2**53 + 1, None, 12345678901234567890123]),
    ("DECIMAL(9,0)", [123456789, None, -1]),
    ("DECIMAL(20,4)", [decimal.Decimal("1234567890123456.0001"), None]),
    ("VARCHAR(36)", ["0b7c5d1e-0000-4000-8000-000000000001", None, "x"]),
    ("TIMESTAMP", [datetime.datetime(2024, 2, 29, 23, 59, 59, 999000), None]),
    ("DATE", [datetime.date(1999, 12, 31), None]),
    ("DOUBLE", [0.1, None, 1e300]),
]


@pytest.mark.parametrize(("key_type", "keys"), KEY_TYPES, ids=[k for k, _ in KEY_TYPES])
def test_keys_come_back_exactly_with_nulls_in_the_batch(sql, key_type: str, keys: list) -> None:
    rows = [(key, f"text {i}") for i, key in enumerate(keys)]
    with Stub(decide=fake_model) as stub:
        vm = model_vm(
            sql(key_type=key_type, batch_size=10), connections=connection(stub.url, TOKEN)
        )
        out = vm.run_groups([rows])
    assert [r[0] for r in out] == keys
    assert [type(r[0]) for r in out] == [type(k) for k in keys]
    assert all(r[-1] is None for r in out)


def test_batches_are_bounded_by_bytes(sql) -> None:
    rows = [(i, ("é" * 150) + str(i)) for i in range(1, 11)]  # ~310 bytes of JSON each
    rows.insert(5, (99, "x" * 3000))  # larger than the bound: sent alone
    with Stub(decide=fake_model) as stub:
        vm = model_vm(
            sql(batch_size=100, max_batch_bytes=1024), connections=connection(stub.url, TOKEN)
        )
        out = vm.run_groups([rows])
    assert [r[0] for r in out] == [r[0] for r in rows] and all(r[-1] is None for r in out)
    sizes = [len(body) for _, _, body in stub.requests]
    counts = [len(r) for r in stub.sent_rows()]
    assert counts == [3, 2, 1, 3, 2] and sum(counts) == len(rows)
    assert all(size <= 1024 for size, n in zip(sizes, counts, strict=True) if n > 1)


def test_503_then_success_honours_retry_after(sql) -> None:
    with Stub(decide=then_model(2, 503, {"Retry-After": "0"})) as stub:
        vm = model_vm(sql(batch_size=20, retries=3), connections=connection(stub.url, TOKEN))
        assert vm.run_groups([ROWS]) == expected(ROWS)
    assert stub.posts == 3

    with Stub(decide=then_model(1, 429, {"Retry-After": "1"})) as stub:
        vm = model_vm(sql(batch_size=20, retries=1), connections=connection(stub.url, TOKEN))
        start = time.monotonic()
        out = vm.run_groups([ROWS])
        waited = time.monotonic() - start
    assert out == expected(ROWS)
    assert 1.0 <= waited < 5.0


def test_400_batch_is_bisected_so_good_rows_survive(sql) -> None:
    rows = [(i, "POISON here" if i in (3, 8) else f"row {i}") for i in range(1, 11)]
    with Stub(decide=fake_model) as stub:
        out = model_vm(sql(batch_size=10), connections=connection(stub.url, TOKEN)).run_groups(
            [rows]
        )
    assert [r[0] for r in out] == list(range(1, 11))
    for _key, text, label, score, rank, error in out:
        if "POISON" in text:
            assert (label, score, rank) == (None, None, None)
            assert "HTTP 400 BAD_REQUEST" in error and "poisoned" in error
        else:
            assert (label, score, rank, error) == (*fake_prediction(text).values(), 1, None)
    assert stub.posts <= 2 * len(rows)  # bisection is bounded


def test_params_error_is_not_bisected(sql) -> None:
    def decide(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        message = {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid parameters found"}
        return json_answer(400, message)

    with Stub(decide=decide) as stub:
        out = model_vm(sql(batch_size=8), connections=connection(stub.url, TOKEN)).run_groups(
            [ROWS]
        )
    assert stub.posts == 2  # one per batch
    assert all("Invalid parameters found" in r[-1] for r in out)


def test_server_down_fails_fast_after_the_breaker_opens(sql) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    vm = model_vm(sql(batch_size=3), connections=connection(url, TOKEN))
    start = time.monotonic()
    out = vm.run_groups([ROWS[:5], ROWS[5:]])
    assert time.monotonic() - start < 10
    assert [r[:2] for r in out] == ROWS and all(r[2:5] == (None,) * 3 for r in out)
    first, later = out[0][-1], out[-1][-1]
    assert first.startswith("cannot reach http://127.0.0.1:")
    assert "gave up after 3 attempts; circuit open" in first
    assert later.startswith("not sent: no server is available (circuit open")
    assert all(TOKEN not in r[-1] for r in out)


def test_failover_to_the_next_url(sql) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Stub(decide=fake_model) as stub:
        address = f"{dead}, {stub.url}/"
        for vm_id in ("1", "2", "3", "4"):  # whichever URL a VM starts at, all rows succeed
            vm = model_vm(
                sql(batch_size=5, retries=1), connections=connection(address, TOKEN), vm_id=vm_id
            )
            assert vm.run_groups([ROWS]) == expected(ROWS)


def test_wrong_token_is_401_without_retries(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = model_vm(sql(batch_size=4, retries=3), connections=connection(stub.url, "wrong"))
        out = vm.run_groups([ROWS])
    assert stub.posts == 3  # one request per batch, no retry storm, no breaker
    assert all("HTTP 401 UNAUTHENTICATED" in r[-1] and r[2] is None for r in out)


def test_token_only_in_the_authorization_header(sql) -> None:
    def echo_token(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        message = f"rejected {headers.get('Authorization')}"  # a server that leaks it
        return json_answer(403, {"error_code": "PERMISSION_DENIED", "message": message})

    with Stub(decide=echo_token) as stub:
        out = model_vm(sql(batch_size=20), connections=connection(stub.url, TOKEN)).run_groups(
            [ROWS]
        )
        assert "Authorization" not in model_vm(sql()).exa.meta.script_code
    assert all(TOKEN not in str(value) for row in out for value in row)
    assert all("Bearer ***" in r[-1] for r in out)
    _, headers, body = stub.requests[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}" and TOKEN.encode() not in body


def test_no_token_sends_no_authorization_header(sql) -> None:
    with Stub(decide=fake_model) as stub:
        model_vm(sql(), connections=connection(stub.url, "")).run_groups([ROWS[:2]])
    assert "Authorization" not in stub.requests[0][1]


def test_missing_connection_is_a_clear_error(sql) -> None:
    vm = model_vm(sql(), connections={})
    with pytest.raises(RuntimeError) as info:
        vm.run_groups([ROWS])
    message = str(info.value)
    assert "E-EMS-UDF-1" in message and "MLFLOW_SERVER" in message and "1121" in message
    assert "CREATE CONNECTION" in message and "GRANT ACCESS ON CONNECTION" in message
    assert "ML.TEXT_CLASSIFICATION" in message


@pytest.mark.parametrize("address", ["", "ftp://host:1", "http://user:pw@host:5000"])
def test_bad_connection_address(sql, address: str) -> None:
    vm = model_vm(sql(), connections=connection(address, TOKEN))
    with pytest.raises(RuntimeError, match="E-EMS-UDF-2"):
        vm.run_groups([ROWS])


def test_missing_or_old_library_is_a_clear_error(sql) -> None:
    from tests.exasol_runtime import UdfVM

    full = sql()
    scripts = full.split("-- 3. SET script")[1]  # the scripts without the library
    with pytest.raises(
        RuntimeError, match=r"E-EMS-UDF-4: cannot load the client library ML\.EMS_CLIENT"
    ):
        UdfVM(scripts, "ML.TEXT_CLASSIFICATION")
    old = "--/\nCREATE OR REPLACE PYTHON3 SCALAR SCRIPT ML.EMS_CLIENT() RETURNS INT AS\nX = 1\n/\n"
    with pytest.raises(RuntimeError, match="has API version None, this script needs 1"):
        UdfVM(old + scripts, "ML.TEXT_CLASSIFICATION")


def test_unexpected_response_shape_is_a_row_error(sql) -> None:
    def short(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        return json_answer(200, {"predictions": [{"label": "X", "score": 1}]})

    with Stub(decide=short) as stub:
        out = model_vm(sql(retries=0), connections=connection(stub.url)).run_groups([ROWS[:3]])
    assert all("1 predictions for 3 rows" in r[-1] for r in out)


def test_scalar_script(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = model_vm(sql(), "SCALAR", connections=connection(stub.url, TOKEN))
        got = vm.run_scalar([("abcdef",), ("ab",), (None,), ("",), ("POISON",)])
    assert got == ["LONG", "SHORT", None, None, None]
    assert stub.posts == 3
    down = model_vm(
        sql(retries=0), "SCALAR", connections=connection(f"http://127.0.0.1:{free_port()}")
    )
    with pytest.raises(RuntimeError, match="E-EMS-UDF-3: cannot reach"):
        down.run_scalar([("x",)])


def test_per_row_param_columns_and_ranks(sql) -> None:
    rows = [(1, "alpha", 2), (2, "beta", None), (3, "gamma", 1), (4, "delta", 2), (5, None, 3)]
    with Stub(decide=fake_model) as stub:
        vm = model_vm(
            sql(param_columns=("top_k",), params={"top_k": 1}, batch_size=10),
            connections=connection(stub.url, TOKEN),
        )
        assert vm.script.inputs[-1] == ("top_k", "DECIMAL(9,0)")
        out = vm.run_groups([rows])
    params = sorted(json.loads(body)["params"]["top_k"] for _, _, body in stub.requests)
    assert params == [1, 2]  # one request per distinct top_k; NULL -> the --params default
    assert [(r[0], r[3], r[5]) for r in out] == [
        (1, "LONG", 1), (1, "SHORT", 2), (2, "LONG", 1), (3, "LONG", 1),
        (4, "LONG", 1), (4, "SHORT", 2), (5, None, None),
    ]  # fmt: skip
    assert out[0][:3] == (1, "alpha", 2)  # the param column is echoed like the inputs


def test_key_only_output(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = model_vm(sql(key_only=True), connections=connection(stub.url, TOKEN))
        assert [c for c, _ in vm.script.outputs] == [
            "id",
            "label",
            "score",
            "rank",
            "error_message",
        ]
        out = vm.run_groups([[(1, "long text"), (2, None)]])
    assert out == [(1, "LONG", 0.09, 1, None), (2, None, None, None, "input is NULL: text_data")]


def test_clean_gives_plain_python(sql) -> None:
    import numpy as np

    from tests.exasol_runtime import UdfVM

    lib = UdfVM(sql(), "ML.TEXT_CLASSIFICATION").exa.import_script("ML.EMS_CLIENT")
    cases = [
        ((np.int64(3), "int"), 3, int),
        ((np.float32(0.5), "float"), 0.5, float),
        ((float("nan"), "float"), None, type(None)),
        ((float("inf"), "float"), None, type(None)),
        ((None, "str"), None, type(None)),
        ((np.str_("x"), "str"), "x", str),
        (([0.5, 1], "json"), "[0.5,1]", str),
    ]
    for args, want, kind in cases:
        got = lib.clean(*args)
        assert got == want and type(got) is kind, args
