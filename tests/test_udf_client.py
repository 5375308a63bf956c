"""The generated UDF's HTTP behaviour against scripted loopback stubs (fast, no model needed):
retries and backoff, Retry-After, failover, bisection of 400 batches, 401 without retries, an
unreachable server, the connection and the token."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.serverproc import free_port
from tests.test_udf_helpers import (
    Answer,
    Stub,
    UdfVM,
    connection,
    fake_model_dir,
    json_answer,
    make_sql,
)

TOKEN = "s3cr3t-token-value-7f1c"
FAST = {"retries": 2, "backoff": 0.01, "connect_timeout": 2.0, "timeout": 10.0}


def fake_prediction(text: str) -> dict[str, Any]:
    return {"label": "LONG" if len(text) > 3 else "SHORT", "score": len(text) / 100}


def fake_model(n: int, body: bytes, headers: dict[str, str]) -> Answer:
    """A text-classification 'server': rejects rows containing POISON like a real 400."""
    if headers.get("Authorization") != f"Bearer {TOKEN}":
        return json_answer(401, {"error_code": "UNAUTHENTICATED", "message": "Missing or invalid"})
    rows = json.loads(body)["dataframe_split"]["data"]
    for i, (text,) in enumerate(rows):
        if "POISON" in text:
            message = f"Invalid input. Row {i} is poisoned."
            return json_answer(400, {"error_code": "BAD_REQUEST", "message": message})
    return json_answer(200, {"predictions": [fake_prediction(t) for (t,) in rows]})


def then_model(
    first: int, status: int, headers: dict[str, str] | None = None
) -> Any:  # the first ``first`` POSTs get ``status``, then the fake model answers
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
    return [(k, t, fake_prediction(t)["label"], fake_prediction(t)["score"], None) for k, t in rows]


def test_batches_groups_and_keep_alive(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = UdfVM(sql(batch_size=4), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([ROWS[:7], ROWS[7:]])
        vm.cleanup()
    assert out == expected(ROWS)
    assert [c.batch_sizes for c in vm.contexts] == [[4, 3], [4]]
    assert stub.posts == 3
    assert all(h["Content-Type"] == "application/json" for _, h, _ in stub.requests)
    assert {path for path, _, _ in stub.requests} == {"/invocations"}


def test_null_and_empty_inputs(sql) -> None:
    rows = [(1, None), (2, ""), (None, "key is null"), (4, "four")]
    with Stub(decide=fake_model) as stub:
        out = UdfVM(sql(batch_size=3), connections=connection(stub.url, TOKEN)).run_groups([rows])
    assert out[0] == (1, None, None, None, "input is NULL: text_data")
    assert out[1] == (2, "", "SHORT", 0.0, None)
    assert out[2] == (None, "key is null", "LONG", 0.11, None)
    assert out[3] == (4, "four", "LONG", 0.04, None)
    sent = [json.loads(b)["dataframe_split"]["data"] for _, _, b in stub.requests]
    assert sent == [[[""], ["key is null"]], [["four"]]]  # the NULL row is never sent


def test_all_rows_null_sends_nothing(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = UdfVM(sql(batch_size=2), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([[(1, None), (2, None), (3, None)]])
    assert [r[-1] for r in out] == ["input is NULL: text_data"] * 3
    assert stub.posts == 0


def test_503_then_success_honours_retry_after(sql) -> None:
    with Stub(decide=then_model(2, 503, {"Retry-After": "0"})) as stub:
        vm = UdfVM(sql(batch_size=20, retries=3), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([ROWS])
    assert out == expected(ROWS)
    assert stub.posts == 3

    with Stub(decide=then_model(1, 429, {"Retry-After": "1"})) as stub:
        vm = UdfVM(sql(batch_size=20, retries=1), connections=connection(stub.url, TOKEN))
        start = time.monotonic()
        out = vm.run_groups([ROWS])
        waited = time.monotonic() - start
    assert out == expected(ROWS)
    assert 1.0 <= waited < 5.0


def test_persistent_5xx_gives_error_rows_after_bounded_retries(sql) -> None:
    with Stub(decide=then_model(10**6, 500)) as stub:
        vm = UdfVM(sql(batch_size=4, retries=2), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([ROWS])
    assert len(out) == len(ROWS)
    assert [r[:2] for r in out] == ROWS
    assert all(r[2:4] == (None, None) for r in out)
    assert all("HTTP 500" in r[4] and "gave up after 3 attempts" in r[4] for r in out)
    assert stub.posts == 3 * 3  # 3 batches x (1 + 2 retries)


def test_400_batch_is_bisected_so_good_rows_survive(sql) -> None:
    rows = [(i, "POISON here" if i in (3, 8) else f"row {i}") for i in range(1, 11)]
    with Stub(decide=fake_model) as stub:
        vm = UdfVM(sql(batch_size=10), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([rows])
    assert [r[0] for r in out] == list(range(1, 11))
    for _key, text, label, score, error in out:
        if "POISON" in text:
            assert (label, score) == (None, None)
            assert "HTTP 400 BAD_REQUEST" in error and "poisoned" in error
        else:
            assert (label, score, error) == (*fake_prediction(text).values(), None)
    assert stub.posts <= 2 * len(rows)  # bisection is bounded


def test_params_error_is_not_bisected(sql) -> None:
    def decide(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        return json_answer(
            400,
            {"error_code": "INVALID_PARAMETER_VALUE", "message": "Invalid parameters found: x"},
        )

    with Stub(decide=decide) as stub:
        vm = UdfVM(sql(batch_size=8), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([ROWS])
    assert stub.posts == 2  # one per batch
    assert all("Invalid parameters found" in r[-1] for r in out)


def test_server_down_every_row_has_an_error(sql) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    vm = UdfVM(sql(batch_size=3), connections=connection(url, TOKEN))
    start = time.monotonic()
    out = vm.run_groups([ROWS[:5], ROWS[5:]])
    assert time.monotonic() - start < 30
    assert [r[:2] for r in out] == ROWS
    assert all(r[2] is None and r[3] is None for r in out)
    assert all(r[4].startswith("cannot reach http://127.0.0.1:") for r in out)
    # after two lost batches the VM stops backing off (one try per URL)
    assert "gave up after 3 attempts" in out[0][4] and "gave up after 1 attempt)" in out[-1][4]
    assert all(TOKEN not in r[4] for r in out)


def test_failover_to_the_next_url(sql) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with Stub(decide=fake_model) as stub:
        address = f"{dead}, {stub.url}/"
        for vm_id in ("1", "2", "3", "4"):  # whichever URL a VM starts at, all rows succeed
            vm = UdfVM(
                sql(batch_size=5, retries=1), connections=connection(address, TOKEN), vm_id=vm_id
            )
            assert vm.run_groups([ROWS]) == expected(ROWS)


def test_wrong_token_is_401_without_retries(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = UdfVM(sql(batch_size=4, retries=3), connections=connection(stub.url, "wrong"))
        out = vm.run_groups([ROWS])
    assert stub.posts == 3  # one request per batch, no retry storm
    assert all("HTTP 401 UNAUTHENTICATED" in r[-1] for r in out)
    assert all(r[2] is None for r in out)


def test_token_only_in_the_authorization_header(sql) -> None:
    def echo_token(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        message = f"rejected {headers.get('Authorization')}"  # a server that leaks it
        return json_answer(403, {"error_code": "PERMISSION_DENIED", "message": message})

    with Stub(decide=echo_token) as stub:
        vm = UdfVM(sql(batch_size=20), connections=connection(stub.url, TOKEN))
        out = vm.run_groups([ROWS])
    assert all(TOKEN not in str(value) for row in out for value in row)
    assert all("Bearer ***" in r[-1] for r in out)
    _, headers, body = stub.requests[0]
    assert headers["Authorization"] == f"Bearer {TOKEN}" and TOKEN.encode() not in body


def test_no_token_sends_no_authorization_header(sql) -> None:
    with Stub(decide=fake_model) as stub:
        UdfVM(sql(), connections=connection(stub.url, "")).run_groups([ROWS[:2]])
    assert "Authorization" not in stub.requests[0][1]


def test_missing_connection_is_a_clear_error(sql) -> None:
    vm = UdfVM(sql(), connections={})
    with pytest.raises(RuntimeError) as info:
        vm.run_groups([ROWS])
    message = str(info.value)
    assert "E-EMS-UDF-1" in message and "MLFLOW_SERVER" in message
    assert "CREATE CONNECTION" in message and "GRANT ACCESS ON CONNECTION" in message
    assert "ML.TEXT_CLASSIFICATION" in message


@pytest.mark.parametrize("address", ["", "ftp://host:1", "http://user:pw@host:5000"])
def test_bad_connection_address(sql, address: str) -> None:
    vm = UdfVM(sql(), connections=connection(address, TOKEN))
    with pytest.raises(RuntimeError, match="E-EMS-UDF-2"):
        vm.run_groups([ROWS])


def test_unexpected_response_shape_is_a_row_error(sql) -> None:
    def short(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        return json_answer(200, {"predictions": [{"label": "X", "score": 1}]})

    with Stub(decide=short) as stub:
        out = UdfVM(sql(retries=0), connections=connection(stub.url)).run_groups([ROWS[:3]])
    assert all("1 predictions for 3 rows" in r[-1] for r in out)


def test_scalar_script(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = UdfVM(sql(), kind="SCALAR", connections=connection(stub.url, TOKEN))
        assert vm.run_scalar([("abcdef",), ("ab",), (None,), ("POISON",)]) == [
            "LONG",
            "SHORT",
            None,
            None,
        ]
    assert stub.posts == 3
    down = UdfVM(
        sql(retries=0), kind="SCALAR", connections=connection(f"http://127.0.0.1:{free_port()}")
    )
    with pytest.raises(RuntimeError, match="E-EMS-UDF-3: cannot reach"):
        down.run_scalar([("x",)])


def test_values_are_plain_python(sql) -> None:
    import datetime
    import decimal

    import numpy as np
    import pandas as pd

    ns = UdfVM(sql(), connections=connection("http://127.0.0.1:1")).namespace
    py, key_value = ns["py"], ns["key_value"]
    cases = [
        (np.int64(3), 3, int),
        (np.float32(0.5), 0.5, float),
        (np.float64("nan"), None, type(None)),
        (float("inf"), None, type(None)),
        (pd.NA, None, type(None)),
        (pd.NaT, None, type(None)),
        (np.bool_(True), True, bool),
        (np.str_("x"), "x", str),
        (decimal.Decimal("1.5"), decimal.Decimal("1.5"), decimal.Decimal),
        (
            pd.Timestamp("2024-01-02 03:04:05"),
            datetime.datetime(2024, 1, 2, 3, 4, 5),
            datetime.datetime,
        ),
    ]
    for value, want, kind in cases:
        got = py(value)
        assert got == want and type(got) is kind, value
    assert type(key_value(np.float64(7.0))) is int and key_value(np.float64(7.0)) == 7
    assert type(key_value(decimal.Decimal("8"))) is int


def test_varchar_key_passes_through(sql) -> None:
    with Stub(decide=fake_model) as stub:
        vm = UdfVM(
            sql(key_column="doc_id", key_type="VARCHAR(36)"),
            connections=connection(stub.url, TOKEN),
        )
        out = vm.run_groups([[("a-1", "first text"), (None, "xy"), ("c-3", None)]])
    assert [r[0] for r in out] == ["a-1", None, "c-3"]
    assert out[0][2:] == ("LONG", 0.1, None) and out[2][-1] == "input is NULL: text_data"
