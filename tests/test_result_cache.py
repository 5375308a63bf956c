"""Each distinct input computed once: in-request deduplication and the result cache.

Unit tests of the cache (LRU by bytes, counters, threads), then real fp32 exports of every task
in process: duplicates reach the model once, cached answers equal uncached ones, and a new model
version starts with an empty cache."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest
from exasol_mlflow_server.runtime.batcher import DirectExecutor
from exasol_mlflow_server.runtime.model import load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload
from exasol_mlflow_server.runtime.result_cache import (
    MISSING,
    ResultCache,
    distinct_rows,
    row_keys,
    size_of,
)
from exasol_mlflow_server.runtime.state import ModelState

from tests.conftest import metric_sum

# ---- units --------------------------------------------------------------------------------------


def test_rows_are_keyed_by_every_column_and_lists():
    cols = {"text": ["a", "b", "a", "a"], "candidate_labels": [["x"], ["x"], ["x"], ["y"]]}
    keys = row_keys(cols)
    assert keys[0] == keys[2] != keys[3] and keys[0] != keys[1]
    first, inverse = distinct_rows(keys)
    assert first == [0, 1, 3] and inverse == [0, 1, 0, 2]


def test_cache_is_lru_bounded_in_bytes_and_counts():
    value = np.zeros(100, dtype=np.float32)
    per_entry = size_of(value)
    cache = ResultCache(max_bytes=3 * per_entry)
    pk = cache.params_key({"normalize": None})
    cache.put_many(pk, [(("a",), value), (("b",), value), (("c",), value)])
    assert cache.get_many(pk, [("a",)])[0] is value  # a is now the most recent
    cache.put_many(pk, [(("d",), value)])  # evicts b, the least recently used
    got = cache.get_many(pk, [("a",), ("b",), ("c",), ("d",)])
    assert [g is MISSING for g in got] == [False, True, False, False]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.entries) == (4, 1, 1, 3)
    assert stats.bytes == 3 * per_entry <= stats.capacity_bytes
    other = cache.params_key({"normalize": True})
    assert cache.get_many(other, [("a",)])[0] is MISSING  # params are part of the key
    cache.put_many(pk, [(("huge",), np.zeros(10_000, dtype=np.float32))])
    assert cache.get_many(pk, [("huge",)])[0] is MISSING  # larger than the cache: never kept
    cache.clear()
    assert cache.stats().entries == cache.stats().bytes == 0


def test_a_zero_sized_cache_is_off():
    cache = ResultCache(0)
    cache.put_many(b"", [(("a",), 1)])
    assert not cache.enabled and cache.get_many(b"", [("a",)]) == [MISSING]
    assert cache.stats().misses == 0


def test_cache_under_threads_keeps_its_accounting():
    cache = ResultCache(max_bytes=50 * size_of("x" * 10))
    pk = cache.params_key({})

    def work(t: int) -> None:
        for i in range(300):
            cache.put_many(pk, [((f"{t}-{i % 80}",), "x" * 10)])
            cache.get_many(pk, [(f"{t}-{(i * 7) % 80}",)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stats = cache.stats()
    assert stats.bytes <= stats.capacity_bytes and stats.entries <= 50
    assert stats.hits + stats.misses == 8 * 300
    assert stats.bytes == stats.entries * size_of("x" * 10)


# ---- real models ----------------------------------------------------------------------------------
class CountingExecutor(DirectExecutor):
    """The real synchronous executor, counting the sequences that reach the model."""

    def __init__(self, model: Any) -> None:
        super().__init__(model.run_batch, 512)
        self.seqs = 0

    def execute(self, seqs, deadline=None):
        self.seqs += len(seqs)
        return super().execute(seqs, deadline)


ROWS: dict[str, tuple[dict[str, list[Any]], dict[str, Any]]] = {
    "feature-extraction": ({"text": ["alpha beta", "gamma", "alpha beta", "", "gamma"]}, {}),
    "text-classification": ({"text": ["good", "bad", "good", "good"]}, {"top_k": 2}),
    "token-classification": (
        {"text": ["Angela Merkel met Macron.", "Exasol, Nuremberg.", "Angela Merkel met Macron."]},
        {"aggregation_strategy": "simple"},
    ),
    "question-answering": (
        {
            "question": ["Where?", "Who?", "Where?"],
            "context": ["Exasol is in Nuremberg.", "Ann wrote it.", "Exasol is in Nuremberg."],
        },
        {},
    ),
    "zero-shot-classification": (
        {
            "text": ["The match ended late.", "Budget passed.", "The match ended late."],
            "candidate_labels": [["sports", "politics"]] * 3,
        },
        {},
    ),
    "fill-mask": ({"text": ["Paris is the [MASK].", "A [MASK] day.", "Paris is the [MASK]."]}, {}),
}


def payload(task: str) -> Payload:
    cols, params = ROWS[task]
    return Payload({k: list(v) for k, v in cols.items()}, len(next(iter(cols.values()))), params)


def plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize("task", list(ROWS))
def test_duplicates_once_and_cached_equals_uncached(export_dir, task):
    model = load_model(export_dir(task, "none"), threads=1)
    plain_exec, cached_exec = CountingExecutor(model), CountingExecutor(model)
    uncached = Pipeline(model, plain_exec)  # no cache: in-request dedup only
    cached = Pipeline(model, cached_exec, cache=ResultCache(1 << 24))
    # the answer without any sharing: each row alone
    rows = payload(task)
    alone = []
    for i in range(rows.n_rows):
        one = Payload({k: [v[i]] for k, v in rows.columns.items()}, 1, rows.params)
        alone.append(plain(uncached.predict_payload(one)[0])[0])
    every_row_seqs = plain_exec.seqs  # what the model runs without sharing
    keys = row_keys(uncached.task.select(payload(task)))
    firsts = sorted({k: i for i, k in reversed(list(enumerate(keys)))}.values())
    distinct = len(firsts)
    plain_exec.seqs = 0
    uncached.predict_payload(
        Payload({k: [v[i] for i in firsts] for k, v in rows.columns.items()}, distinct, rows.params)
    )
    distinct_seqs, plain_exec.seqs = plain_exec.seqs, 0
    first, n = uncached.predict_payload(payload(task))
    assert n == rows.n_rows and plain(first) == alone  # fan-out in input order, same answers
    assert plain_exec.seqs == distinct_seqs < every_row_seqs  # each distinct row once

    got1, _ = cached.predict_payload(payload(task))
    assert cached_exec.seqs == plain_exec.seqs  # duplicates once, here too
    got2, _ = cached.predict_payload(payload(task))
    assert cached_exec.seqs == plain_exec.seqs  # the second request: all from the cache
    assert plain(got1) == plain(got2) == plain(first)
    stats = cached.cache.stats()
    assert (stats.hits, stats.misses) == (distinct, distinct)
    if task == "feature-extraction":
        assert isinstance(got2, np.ndarray)  # still one array for orjson's fast path


def test_a_new_model_version_starts_with_an_empty_cache(export_dir):
    """The cache belongs to a pipeline, i.e. a version: after a swap nothing old is answered."""
    v1 = load_model(export_dir("text-classification", "none"), threads=1)
    v2 = load_model(export_dir("text-classification", "int8"), threads=1)
    state = ModelState()
    p1 = Pipeline(v1, CountingExecutor(v1), cache=ResultCache(1 << 24))
    p2 = Pipeline(v2, CountingExecutor(v2), cache=ResultCache(1 << 24))
    state.swap(p1, {}, "1")
    rows = Payload({"text": ["same text"] * 3}, 3, {"top_k": 0})
    before = state.current().predict_payload(rows)[0]
    assert p1.cache.stats().entries == 1
    state.swap(p2, {}, "2")
    after = state.current().predict_payload(rows)[0]
    assert p2.executor.seqs == 1 and p2.cache.stats().misses == 1  # computed by version 2
    assert after[0] != before[0]  # int8 and fp32 scores differ: version 2 really answered


def test_cache_counters_reach_metrics_on_a_real_server(server_for):
    import requests

    srv = server_for("text-classification", "--result-cache-mb", "8")
    rows = ["cached row one", "cached row two", "cached row one"]
    for _ in range(2):
        r = requests.post(srv.url + "/invocations", json={"inputs": rows}, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 3
    text = requests.get(srv.url + "/metrics", timeout=10).text
    # two distinct rows: computed once (2 misses), then both from the cache (2 hits)
    assert metric_sum(text, "ems_result_cache_misses_total") == 2
    assert metric_sum(text, "ems_result_cache_hits_total") == 2
    assert metric_sum(text, "ems_result_cache_entries") == 2
    assert metric_sum(text, "ems_result_cache_bytes") > 0
