"""Bearer auth end to end: a server started with --token-file, called directly and by the UDF."""

from __future__ import annotations

import pytest
import requests

from tests.serverproc import ServerProcess
from tests.test_udf_helpers import Stub, connection, make_sql, model_vm

TOKEN = "udf-auth-token-3b9e51c0d7"
ROWS = [(1, "I love it."), (2, None), (3, "awful"), (4, ""), (5, "fine")]


@pytest.fixture(scope="module")
def token_server(export_dir, tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n", encoding="utf-8")
    model = export_dir("text-classification")
    with ServerProcess(model, "--threads", "1", "--token-file", str(token_file)) as srv:
        yield srv, model


def invoke(url: str, headers: dict[str, str]) -> requests.Response:
    body = {"dataframe_split": {"columns": ["text"], "data": [["hello"]]}}
    return requests.post(url + "/invocations", json=body, headers=headers, timeout=30)


@pytest.mark.slow
def test_direct_requests_need_the_token(token_server) -> None:
    srv, _ = token_server
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        resp = invoke(srv.url, headers)
        assert resp.status_code == 401
        assert resp.headers["Content-Type"].startswith("application/json")
        body = resp.json()
        assert body["error_code"] == "UNAUTHENTICATED" and body["message"]
        assert TOKEN not in resp.text
    ok = invoke(srv.url, {"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and len(ok.json()["predictions"]) == 1
    for path in ("/ping", "/health"):
        assert requests.get(srv.url + path, timeout=10).status_code == 200
    assert TOKEN not in srv.log()


@pytest.mark.slow
def test_udf_with_the_right_token(token_server) -> None:
    srv, model = token_server
    vm = model_vm(make_sql(model, batch_size=2), connections=connection(srv.url, TOKEN))
    out = vm.run_groups([ROWS])
    assert [r[0] for r in out] == [1, 2, 3, 4, 5]
    null = "input is NULL: text_data"
    assert [r[-1] for r in out] == [None, null, None, null, None]  # '' is NULL in Exasol
    assert all(isinstance(r[2], str) and isinstance(r[3], float) for r in out if r[1])
    assert TOKEN not in srv.log()


@pytest.mark.slow
def test_udf_with_a_wrong_token_gets_401_once_per_batch(token_server) -> None:
    srv, model = token_server
    with Stub(srv.url) as proxy:  # counts the requests that reach the server
        sql = make_sql(model, batch_size=2, retries=3, backoff=0.01)
        out = model_vm(sql, connections=connection(proxy.url, "not-the-token")).run_groups([ROWS])
        assert proxy.posts == 3  # one per batch of 2 rows (the last has 1), no retries after 401
    assert [r[0] for r in out] == [1, 2, 3, 4, 5]
    for row in out:
        assert row[2] is None and row[3] is None
        if row[1]:
            assert "HTTP 401 UNAUTHENTICATED" in row[-1] and "not-the-token" not in row[-1]
    assert TOKEN not in srv.log() and "not-the-token" not in srv.log()
