"""The generated UDFs against the real server, for every task, under the strict runtime
(tests/exasol_runtime.py): the emitted rows equal the server's own predictions for the same rows
(asked directly, one row per request), over several groups, batch sizes that do not divide the
group sizes, NULL and '' inputs (NULL in Exasol), NULL and huge keys (DECIMAL(36,0): 2**53+1 and
12345678901234567890123 come back exactly). Plus per-row params, key-only spans, the same code
under exasol-udf-mock-python, a 503-then-proxy stub and a row the proxy rejects."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from exasol_mlflow_server.runtime.tasks import TASK_NAMES
from exasol_udf_mock_python.mock_context import StandaloneMockContext

from tests.test_udf_helpers import (
    Answer,
    Stub,
    connection,
    json_answer,
    make_sql,
    mock_exa,
    model_vm,
)

TASKS = TASK_NAMES
LABELS = "sports, politics, science"
# (key, *inputs) per task: a NULL input, an empty string (NULL in Exasol), rows the server
# rejects (400); the keys are replaced by KEYS (huge and NULL) in the SET tests.
ROWS: dict[str, list[tuple]] = {
    "feature-extraction": [
        (1, "The cat sits on the mat."),
        (2, ""),
        (3, None),
        (4, "Exasol is an analytics database."),
        (5, "short"),
        (6, "A somewhat longer sentence about embeddings and vectors."),
        (7, "x"),
        (8, "Berlin"),
        (9, "last one"),
    ],
    "text-classification": [
        (1, "I love this product."),
        (2, "This is terrible."),
        (3, None),
        (4, ""),
        (5, "It is fine, I guess."),
        (6, "Absolutely wonderful experience!"),
        (7, "meh"),
        (8, "Never again."),
        (9, "ok"),
    ],
    "token-classification": [
        (1, "John Smith works at Acme Corp in Berlin."),
        (2, ""),
        (3, None),
        (4, "Angela Merkel visited Paris."),
        (5, "x"),
        (6, "The United Nations met in New York on Monday."),
        (7, "no entities here maybe"),
    ],
    "question-answering": [
        (1, "Who works at Acme?", "John Smith works at Acme Corp in Berlin."),
        (2, "Where is Acme?", "John Smith works at Acme Corp in Berlin."),
        (3, None, "context without question"),
        (4, "", "An empty question is NULL in Exasol."),
        (5, "What is Exasol?", "Exasol is an analytics database."),
        (6, "When?", "The meeting was on Monday."),
        (7, "Why?", None),
    ],
    "zero-shot-classification": [
        (1, "I love playing football.", LABELS),
        (2, "The election results are in.", LABELS),
        (3, None, LABELS),
        (4, "", "a, b"),
        (5, "Quantum physics is hard.", '["science", "art"]'),
        (6, "The match ended 2-1.", "sports,politics"),
        (7, "no labels", None),
    ],
    "fill-mask": [
        (1, "Paris is the [MASK] of France."),
        (2, "no mask here"),  # no mask: 400 for this row only
        (3, None),
        (4, "The [MASK] sat on the mat."),
        (5, "no mask in this text"),
        (6, "I like [MASK] and [MASK]."),  # two masks: one list per mask
        (7, "Exasol is a [MASK]."),
    ],
    **{
        task: [
            (1, "The meeting was moved to Thursday."),
            (2, ""),
            (3, None),
            (4, "Hello world"),
            (5, "Paris"),
        ]
        for task in ("text2text-generation", "translation", "summarization", "text-generation")
    },
}
COLUMNS = {
    "question-answering": ["question", "context"],
    "zero-shot-classification": ["text", "candidate_labels"],
}
PARAMS = {
    "token-classification": {"aggregation_strategy": "simple"},
    "text-generation": {"do_sample": False},  # what its UDF scripts send (SPEC.udf.defaults)
}


def ask_server(url: str, task: str, inputs: tuple) -> tuple[int, Any]:
    """One row straight to the server: (status, prediction or error body)."""
    body: dict[str, Any] = {
        "dataframe_split": {"columns": COLUMNS.get(task, ["text"]), "data": [list(inputs)]}
    }
    if task in PARAMS:
        body["params"] = PARAMS[task]
    resp = requests.post(url + "/invocations", json=body, timeout=60)
    data = resp.json()
    return resp.status_code, data["predictions"][0] if resp.status_code == 200 else data


def expected_outputs(task: str, p: Any) -> list[tuple]:
    """The output columns the UDF should emit for one prediction (written independently)."""
    if task == "feature-extraction":
        return [(p,)]  # compared as a parsed JSON vector
    if task == "text-classification":
        items = p if isinstance(p, list) else [p]
        return [(c["label"], c["score"], rank) for rank, c in enumerate(items, 1)]
    if task == "token-classification":
        return [(e["start"], e["end"], e["word"], e["entity_group"], e["score"]) for e in p]
    if task == "question-answering":
        items = p if isinstance(p, list) else [p]
        return [(a["answer"], a["score"], a["start"], a["end"], r) for r, a in enumerate(items, 1)]
    if task == "zero-shot-classification":
        return [
            (lab, s, i + 1) for i, (lab, s) in enumerate(zip(p["labels"], p["scores"], strict=True))
        ]
    if task == "fill-mask":
        masks = p if p and isinstance(p[0], list) else [p]
        return [
            (c["sequence"], c["token_str"], c["score"], rank)
            for mask in masks
            for rank, c in enumerate(mask, 1)
        ]
    if task in ("text2text-generation", "translation", "summarization", "text-generation"):
        return [(p,)]  # one string per row
    raise AssertionError(task)


def batches(rows: int, size: int) -> list[int]:
    return [size] * (rows // size) + ([rows % size] if rows % size else [])


def assert_close(actual: tuple, expected: tuple, task: str) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        if task == "feature-extraction" and isinstance(a, str):
            assert json.loads(a) == pytest.approx(e, abs=1e-4)
        elif isinstance(e, float):
            assert type(a) is float and a == pytest.approx(e, abs=1e-4)
        else:
            assert a == e


def check_task_output(url: str, task: str, rows: list[tuple], out: list[tuple]) -> None:
    n_inputs = len(rows[0]) - 1
    by_key: dict[Any, list[tuple]] = {}
    for row in out:
        by_key.setdefault(row[0], []).append(row)
    assert list(by_key) == [r[0] for r in rows], "every input row comes back, in order"
    for row in rows:
        emitted = by_key[row[0]]
        stored = tuple(None if v == "" else v for v in row)  # '' is NULL in Exasol
        assert all(e[: 1 + n_inputs] == stored for e in emitted), "key and inputs pass through"
        outputs = [e[1 + n_inputs : -1] for e in emitted]
        errors = [e[-1] for e in emitted]
        if any(v is None or v == "" for v in row[1:]):
            assert len(emitted) == 1 and errors[0].startswith("input is NULL")
            assert all(v is None for v in outputs[0])
            continue
        status, prediction = ask_server(url, task, row[1:])
        if status != 200:
            assert len(emitted) == 1 and all(v is None for v in outputs[0])
            assert f"HTTP {status} {prediction['error_code']}" in errors[0]
            assert prediction["message"].replace("Row 0", "") in errors[0].replace("Row 0", "")
            continue
        want = expected_outputs(task, prediction)
        if not want:  # e.g. no entities: one row of NULL outputs, no error
            assert len(emitted) == 1 and all(v is None for v in outputs[0]) and errors == [None]
            continue
        assert errors == [None] * len(want)
        assert len(outputs) == len(want)
        for got, exp in zip(outputs, want, strict=True):
            assert_close(got, exp, task)


KEYS = [2**53 + 1, None, 12345678901234567890123, 10**35 + 1, -(2**53) - 1, 2, 3, 4, 5]


def with_keys(rows: list[tuple]) -> list[tuple]:
    return [(key, *row[1:]) for key, row in zip(KEYS, rows, strict=False)]


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_udf_matches_server_predictions(task: str, server_for, export_dir) -> None:
    srv = server_for(task)
    sql = make_sql(
        export_dir(task), batch_size=3, retries=1, backoff=0.05, key_type="DECIMAL(36,0)"
    )
    rows = with_keys(ROWS[task])
    vm = model_vm(sql, connections=connection(srv.url))
    out = vm.run_groups([rows[:4], rows[4:]])
    vm.cleanup()
    assert [type(r[0]) for r in out if r[0] is not None] == [int] * sum(
        r[0] is not None for r in out
    )
    check_task_output(srv.url, task, rows, out)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_scalar_udf_matches_server(task: str, server_for, export_dir) -> None:
    srv = server_for(task)
    vm = model_vm(make_sql(export_dir(task), retries=0), "SCALAR", connections=connection(srv.url))
    rows = ROWS[task]
    got = vm.run_scalar([r[1:] for r in rows])
    for row, value in zip(rows, got, strict=True):
        if any(v is None or v == "" for v in row[1:]):
            assert value is None
            continue
        status, prediction = ask_server(srv.url, task, row[1:])
        if status != 200:
            assert value is None
        elif task == "feature-extraction":
            assert json.loads(value) == pytest.approx(prediction, abs=1e-4)
        elif task == "token-classification":
            entities = json.loads(value)
            assert [e["word"] for e in entities] == [e["word"] for e in prediction]
            assert [e["entity"] for e in entities] == [e["entity_group"] for e in prediction]
            assert [e["start_pos"] for e in entities] == [e["start"] for e in prediction]
        else:
            assert value == expected_outputs(task, prediction)[0][0]


@pytest.mark.slow
def test_embedding_columns_format(server_for, export_dir) -> None:
    srv = server_for("feature-extraction")
    sql = make_sql(export_dir("feature-extraction"), embedding_format="columns", batch_size=2)
    vm = model_vm(sql, connections=connection(srv.url))
    assert vm.script.outputs[2] == ("DIM_0", "DOUBLE")
    dims = len(vm.script.outputs) - 3
    assert dims == 384  # all-MiniLM-L6-v2's hidden_size
    rows = [(1, "alpha"), (2, None), (3, "gamma")]
    out = vm.run_groups([rows])
    _, vector = ask_server(srv.url, "feature-extraction", ("gamma",))
    assert out[2][2:-1] == pytest.approx(tuple(vector), abs=1e-4)
    assert out[1][2:] == (None,) * dims + ("input is NULL: text_data",)


@pytest.mark.slow
def test_per_row_params_match_the_server(server_for, export_dir) -> None:
    """fill-mask with a top_k column: each row's candidates are the server's for its top_k."""
    srv = server_for("fill-mask")
    sql = make_sql(export_dir("fill-mask"), param_columns=["top_k"], batch_size=4)
    rows = [(1, "Paris is the [MASK] of France.", 1), (2, "The [MASK] sat.", 3),
            (3, "I like [MASK].", None), (4, "Exasol is a [MASK].", 2)]  # fmt: skip
    out = model_vm(sql, connections=connection(srv.url)).run_groups([rows])
    for key, text, top_k in rows:
        params = {"top_k": top_k or 5}
        body = {"dataframe_split": {"columns": ["text"], "data": [[text]]}, "params": params}
        resp = requests.post(srv.url + "/invocations", json=body, timeout=60)
        want = expected_outputs("fill-mask", resp.json()["predictions"][0])
        got = [r[3:-1] for r in out if r[0] == key]
        assert len(got) == len(want) == params["top_k"]
        for g, w in zip(got, want, strict=True):
            assert_close(g, w, "fill-mask")


@pytest.mark.slow
def test_key_only_token_spans(server_for, export_dir) -> None:
    """--key-only: key and character offsets, no text; the offsets point into the input."""
    srv = server_for("token-classification")
    sql = make_sql(export_dir("token-classification"), key_only=True, key_type="VARCHAR(20)")
    rows = [("doc-1", "John Smith works at Acme Corp in Berlin."), ("doc-2", None)]
    vm = model_vm(sql, connections=connection(srv.url))
    assert [c for c, _ in vm.script.outputs] == [
        "id", "start_pos", "end_pos", "word", "entity", "score", "error_message",
    ]  # fmt: skip
    out = vm.run_groups([rows])
    _, prediction = ask_server(srv.url, "token-classification", (rows[0][1],))
    spans = [(r[1], r[2], r[4]) for r in out if r[0] == "doc-1"]
    assert spans == [(e["start"], e["end"], e["entity_group"]) for e in prediction]
    text = rows[0][1]
    assert all(0 <= start < end <= len(text) for start, end, _ in spans)
    assert out[-1] == ("doc-2", None, None, None, None, None, "input is NULL: text_data")


@pytest.mark.slow
def test_official_mock_context_runs_the_scripts(server_for, export_dir) -> None:
    """The same scripts under exasol-udf-mock-python's StandaloneMockContext (with the
    import_script the mock lacks; docs/exasol.md shows it)."""
    srv = server_for("text-classification")
    sql = make_sql(export_dir("text-classification"), batch_size=2)
    exa, namespace = mock_exa(sql, "SET", connection(srv.url))
    rows = [r for r in ROWS["text-classification"] if r[1]]
    ctx = StandaloneMockContext(rows, exa.meta)
    namespace["run"](ctx)
    check_task_output(srv.url, "text-classification", rows, ctx.output)


@pytest.mark.slow
def test_503_stub_then_proxy_to_real_server(server_for, export_dir) -> None:
    srv = server_for("text-classification")
    rows = [r for r in ROWS["text-classification"] if r[1]]

    def decide(n: int, body: bytes, headers: dict[str, str]) -> Answer | None:
        if n <= 3:
            retry_after = "1" if n == 3 else "0"
            message = {"error_code": "TEMPORARILY_UNAVAILABLE", "message": "queue full"}
            return json_answer(503, message, {"Retry-After": retry_after})
        return None  # proxy to the real server

    with Stub(srv.url, decide) as stub:
        sql = make_sql(export_dir("text-classification"), batch_size=4, retries=3, backoff=0.01)
        out = model_vm(sql, connections=connection(stub.url)).run_groups([rows])
        assert stub.posts == 3 + 2  # 3 refused, then the two batches
    check_task_output(srv.url, "text-classification", rows, out)


@pytest.mark.slow
def test_proxy_rejects_one_row_others_scored(server_for, export_dir) -> None:
    srv = server_for("feature-extraction")
    rows = [(i, f"sentence {i}" if i != 5 else "FORBIDDEN words") for i in range(1, 9)]

    def decide(n: int, body: bytes, headers: dict[str, str]) -> Answer | None:
        if b"FORBIDDEN" in body:
            message = {"error_code": "BAD_REQUEST", "message": "Invalid input. Forbidden row."}
            return json_answer(400, message)
        return None

    with Stub(srv.url, decide) as stub:
        sql = make_sql(export_dir("feature-extraction"), batch_size=8)
        out = model_vm(sql, connections=connection(stub.url)).run_groups([rows])
    assert [r[0] for r in out] == list(range(1, 9))
    bad = out[4]
    assert bad[2] is None and "HTTP 400 BAD_REQUEST" in bad[3] and "Forbidden row" in bad[3]
    for _key, text, embedding, error in out[:4] + out[5:]:
        assert error is None
        _, vector = ask_server(srv.url, "feature-extraction", (text,))
        assert json.loads(embedding) == pytest.approx(vector, abs=1e-4)


@pytest.mark.slow
def test_genuine_400_rows_are_isolated(server_for, export_dir) -> None:
    """fill-mask text without [MASK] is a 400 from the server for the whole request: the UDF
    bisects the batch so only those rows carry the error and every other row is scored."""
    srv = server_for("fill-mask")
    rows = [
        (i, "no mask here" if i in (2, 7) else f"Row {i} is a [MASK] test.") for i in range(1, 9)
    ]
    with Stub(srv.url) as proxy:
        sql = make_sql(export_dir("fill-mask"), batch_size=8, params={"top_k": 2})
        out = model_vm(sql, connections=connection(proxy.url)).run_groups([rows])
        assert 1 < proxy.posts <= 2 * len(rows)
    errors = {r[0]: r[-1] for r in out}
    assert set(errors) == set(range(1, 9))
    for key in (2, 7):
        assert "HTTP 400 BAD_REQUEST" in errors[key] and "no mask token" in errors[key]
        assert [r for r in out if r[0] == key] == [
            (key, "no mask here", None, None, None, None, errors[key])
        ]
    good = [r for r in out if r[0] not in (2, 7)]
    assert len(good) == 6 * 2 and all(r[-1] is None for r in good)  # top_k=2 rows per text
    for key in sorted({r[0] for r in good}):
        body = {"dataframe_split": {"columns": ["text"], "data": [[rows[key - 1][1]]]}}
        params = {"top_k": 2}
        resp = requests.post(srv.url + "/invocations", json={**body, "params": params}, timeout=60)
        want = expected_outputs("fill-mask", resp.json()["predictions"][0])
        got = [r[2:-1] for r in good if r[0] == key]
        assert len(got) == len(want) == 2
        for g, w in zip(got, want, strict=True):
            assert_close(g, w, "fill-mask")
