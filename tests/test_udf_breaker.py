"""Fail fast: a hung server (accepts the connection, never answers), a 503 storm and a server
that recovers, on loopback, with small timeouts. A query over N batches against a hung server
ends in about one read timeout plus N x a small constant (docs/exasol.md), not N timeouts."""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

import pytest

from tests.test_udf_helpers import (
    HANG,
    Answer,
    Stub,
    connection,
    fake_model_dir,
    json_answer,
    make_sql,
    model_vm,
)

TIMEOUTS = {"timeout": 0.5, "connect_timeout": 0.5, "retries": 1, "backoff": 0.01}


def answer_rows(body: bytes) -> Answer:
    rows = json.loads(body)["dataframe_split"]["data"]
    return json_answer(200, {"predictions": [{"label": "X", "score": 0.5} for _ in rows]})


@pytest.fixture()
def sql(tmp_path) -> Any:
    def build(**options: Any) -> str:
        model = fake_model_dir(tmp_path, "text-classification", labels=["X", "Y"])
        return make_sql(model, **{**TIMEOUTS, "batch_size": 2, **options})

    return build


def rows(n: int, start: int = 0) -> list[tuple]:
    return [(start + i, f"text {start + i}") for i in range(n)]


def timed_query(vm: Any, groups: list[list[tuple]]) -> tuple[list[tuple], float]:
    start = time.monotonic()
    out = vm.run_groups(groups)
    return out, time.monotonic() - start


def test_hung_server_costs_one_timeout_not_one_per_batch(sql) -> None:
    with Stub(decide=lambda n, body, headers: HANG, ping=lambda n: HANG) as stub:
        vm = model_vm(sql(), connections=connection(stub.url))
        out6, elapsed6 = timed_query(vm, [rows(12)])  # 6 batches
        vm = model_vm(sql(), connections=connection(stub.url))
        out60, elapsed60 = timed_query(vm, [rows(120)])  # 60 batches
        posts = stub.posts
    print(f"\nhung server, timeout 0.5 s, 1 retry: 6 batches {elapsed6:.2f} s, 60 batches "
          f"{elapsed60:.2f} s (before: (1 + retries) x timeout per batch = 6.0 s and 60 s)")  # fmt: skip
    assert posts == 2  # one request per VM, then the breaker is open
    assert 0.5 <= elapsed6 < 1.5 and 0.5 <= elapsed60 < 1.5
    assert abs(elapsed60 - elapsed6) < 0.5  # 54 more batches cost next to nothing
    for out in (out6, out60):
        assert all(r[2:5] == (None, None, None) for r in out)
        assert "no response from" in out[0][-1] and "(read timeout)" in out[0][-1]
        assert "gave up after 1 attempt; circuit open" in out[0][-1]
        assert all(r[-1].startswith("not sent: no server is available") for r in out[2:])
        assert "read timeout" in out[-1][-1]  # the reason is kept


def test_open_breaker_probes_within_the_connect_time(sql) -> None:
    """After the wait, a probe (GET /ping) that hangs costs one connect timeout per probe."""
    with Stub(decide=lambda n, body, headers: HANG, ping=lambda n: HANG) as stub:
        vm = model_vm(sql(), connections=connection(stub.url))
        vm.run_groups([rows(4)])
        time.sleep(1.1)  # the first probe is due after 1 s
        out, elapsed = timed_query(vm, [rows(20)])
        pings, posts = stub.pings, stub.posts
    print(f"\nhung server, breaker open, probe due: 10 batches {elapsed:.2f} s")
    assert pings == 1 and posts == 1
    assert 0.5 <= elapsed < 1.3
    assert all(r[-1].startswith("not sent: no server is available") for r in out)


def test_503_storm_opens_the_breaker(sql) -> None:
    def storm(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        message = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "queue full"}
        return json_answer(503, message, {"Retry-After": "0"})

    with Stub(decide=storm) as stub:
        vm = model_vm(sql(retries=2), connections=connection(stub.url))
        out, elapsed = timed_query(vm, [rows(12)])
        assert stub.posts == 3  # the first batch's 1 + retries attempts, then no more requests
        time.sleep(1.1)
        again = vm.run_groups([rows(4)])
        assert stub.pings == 1 and stub.posts == 4  # probe answered: one half-open attempt
    print(f"\n503 storm: 6 batches {elapsed:.2f} s")
    assert elapsed < 2.0
    assert "HTTP 503 TEMPORARILY_UNAVAILABLE" in out[0][-1]
    assert "gave up after 3 attempts; circuit open" in out[0][-1]
    assert all(r[-1].startswith("not sent") for r in out[2:])
    assert "HTTP 503" in again[0][-1] and again[-1][-1].startswith("not sent")


def test_recovered_server_is_let_back_in(sql) -> None:
    state = {"down": True}

    def decide(n: int, body: bytes, headers: dict[str, str]) -> Answer:
        return HANG if state["down"] else answer_rows(body)

    with Stub(decide=decide, ping=lambda n: HANG if state["down"] else None) as stub:
        vm = model_vm(sql(), connections=connection(stub.url))
        down = vm.run_groups([rows(6)])
        state["down"] = False
        time.sleep(1.1)
        up, elapsed = timed_query(vm, [rows(6, 100)])
        more = vm.run_groups([rows(4, 200)])
        assert stub.pings == 1 and stub.posts == 1 + 3 + 2
    assert all(r[-1] is not None for r in down)
    assert [r[0] for r in up] == list(range(100, 106)) and all(r[-1] is None for r in up)
    assert all(r[-1] is None for r in more)
    assert elapsed < 1.0


def test_two_servers_one_hung_the_other_takes_over(sql) -> None:
    with (
        Stub(decide=lambda n, body, headers: HANG) as hung,
        Stub(decide=lambda n, body, headers: answer_rows(body)) as good,
    ):
        vm_id = next(v for v in map(str, range(10)) if zlib.crc32(v.encode()) % 2 == 0)
        vm = model_vm(sql(), connections=connection(f"{hung.url},{good.url}"), vm_id=vm_id)
        out, elapsed = timed_query(vm, [rows(10)])
        assert hung.posts == 1 and good.posts == 5
    assert all(r[-1] is None for r in out)
    assert elapsed < 1.5
