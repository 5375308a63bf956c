"""Parity of the four structured tasks with transformers' pipelines, on real fp32 exports.

Our in-process :class:`Pipeline` (ONNX Runtime, numpy post-processing) against
``transformers.pipeline(task, model=<seeded HF dir>)`` (PyTorch): same labels, entities, spans,
answers and rankings; scores within ``TOL``. Where two candidates are a near-tie (closer than
``TOL``) their order may legitimately differ between ONNX Runtime and PyTorch; only then is a
swap accepted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from exasol_mlflow_server.runtime.batcher import Batcher
from exasol_mlflow_server.runtime.errors import BadRequest, InvalidParameter
from exasol_mlflow_server.runtime.model import load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload

from exasol_mlflow_server import fixtures

pytestmark = pytest.mark.slow

TOL = 1e-4
LONG_CONTEXT = " ".join(
    f"Sentence {i} says that the {animal} lives in {city}."
    for i, (animal, city) in enumerate([("cat", "Paris"), ("dog", "Rome"), ("fox", "Oslo")] * 30)
)  # ~1000 tokens: several windows at max_seq_len 384, many at 128


# ---- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ours(export_dir) -> Any:
    pipes: dict[str, Pipeline] = {}

    def get(task: str) -> Pipeline:
        if task not in pipes:
            pipes[task] = Pipeline(load_model(export_dir(task, "none"), threads=1))
        return pipes[task]

    yield get
    for pipe in pipes.values():
        pipe.close()


@pytest.fixture(scope="module")
def reference() -> Callable[[str], Any]:
    import torch
    from transformers import pipeline

    torch.set_num_threads(1)
    cache: dict[str, Any] = {}

    def get(task: str) -> Any:
        if task not in cache:
            cache[task] = pipeline(task, model=str(fixtures.task_model_dir(task)), device="cpu")
        return cache[task]

    return get


def predict(pipe: Pipeline, columns: dict[str, list[Any]], params: dict[str, Any] | None = None):
    n = len(next(iter(columns.values())))
    predictions, rows = pipe.predict_payload(Payload(columns, n, dict(params or {})))
    assert rows == n and len(predictions) == n
    return predictions


# ---- comparison helpers -----------------------------------------------------------------------
def close(a: float, b: float, tol: float = TOL) -> bool:
    return abs(float(a) - float(b)) <= tol


def assert_items_equal(ours: dict, ref: dict, where: str) -> None:
    assert set(ours) == set(ref), f"{where}: keys {sorted(ours)} != {sorted(ref)}"
    for key, value in ref.items():
        if key == "score":
            assert close(ours[key], value), f"{where}: score {ours[key]} != {value}"
            assert isinstance(ours[key], float), f"{where}: score is {type(ours[key])}"
        else:
            assert ours[key] == value, f"{where}: {key} {ours[key]!r} != {value!r}"


def assert_ranked_equal(ours: list[dict], ref: list[dict], key: Callable[[dict], Any], where: str):
    """Same ranked list; a different item at a rank is accepted only for a near-tie."""
    assert len(ours) == len(ref), f"{where}: {len(ours)} items != {len(ref)}\n{ours}\n{ref}"
    ref_scores = {key(r): r["score"] for r in ref}
    for rank, (o, r) in enumerate(zip(ours, ref, strict=True)):
        if key(o) == key(r):
            assert_items_equal(o, r, f"{where} rank {rank}")
            continue
        assert close(o["score"], r["score"]), f"{where} rank {rank}: {o} != {r}"
        other = ref_scores.get(key(o), r["score"])  # out of the reference's top: at its edge
        assert close(other, o["score"], 2 * TOL), f"{where} rank {rank}: {o} != {r} (no tie)"


# ---- token classification ---------------------------------------------------------------------
NER_TEXTS = [
    "John Smith lives in New York and works for Microsoft.",
    "Unaffordable héllo wörld!! Zürich, São Paulo & 東京 — ok?",
    "x",
    "",
    "The quick brown fox jumps over the lazy dog " * 8,
    "e-mail: jane.doe@example.com; tel. +49-30-1234 (office) 🙂",
    "Un cafe\u0301 noir à Montréal",  # combining accent: the pipeline's length-based subword test
]


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
def test_token_classification_matches_pipeline(ours, reference, strategy):
    got = predict(
        ours("token-classification"), {"text": NER_TEXTS}, {"aggregation_strategy": strategy}
    )
    hf = reference("token-classification")
    total = 0
    for text, entities in zip(NER_TEXTS, got, strict=True):
        expected = hf(text, aggregation_strategy=strategy)
        assert len(entities) == len(expected), f"{strategy} {text!r}: {entities} != {expected}"
        for i, (o, r) in enumerate(zip(entities, expected, strict=True)):
            assert_items_equal(o, r, f"{strategy} {text!r} entity {i}")
        total += len(entities)
    assert total > 10  # the seeded model does tag things: the comparison is not vacuous
    if strategy == "none":
        assert got[3] == []  # the empty string has no tokens


def test_token_classification_ignore_labels(ours, reference):
    text = NER_TEXTS[0]
    got = predict(ours("token-classification"), {"text": [text]}, {"ignore_labels": []})[0]
    expected = reference("token-classification")(text, ignore_labels=[])
    assert [e["entity"] for e in got] == [e["entity"] for e in expected]
    n_tokens = len(ours("token-classification").model.tokenizer.encode([text])[0].ids) - 2
    assert len(got) == n_tokens  # nothing ignored: every non-special token
    default = predict(ours("token-classification"), {"text": [text]})[0]
    assert len(default) < len(got) and all(e["entity"] != "O" for e in default)


# ---- question answering -----------------------------------------------------------------------
QA_ROWS = [
    ("Where does the dog live?", "The dog lives in Berlin, a big city."),
    ("Who is it?", "It is me, Mario!"),
    ("Wo wohnt der Fuchs? ¿Dónde?", "Der Fuchs wohnt in Köln – am Rhein; café « naïve »."),
    ("Where does the fox live?", LONG_CONTEXT),
]


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"top_k": 3},
        {"handle_impossible_answer": True},
        {"top_k": 2, "max_answer_len": 3, "doc_stride": 64},
        {"max_seq_len": 128, "doc_stride": 32, "top_k": 4},
        {"top_k": 5, "handle_impossible_answer": True, "max_seq_len": 256},
    ],
    ids=["default", "top3", "impossible", "short-answers", "small-windows", "top5-impossible"],
)
def test_question_answering_matches_pipeline(ours, reference, params):
    pipe = ours("question-answering")
    questions, contexts = [q for q, _ in QA_ROWS], [c for _, c in QA_ROWS]
    got = predict(pipe, {"question": questions, "context": contexts}, params)
    hf = reference("question-answering")
    for (question, context), answer in zip(QA_ROWS, got, strict=True):
        expected = hf(question=question, context=context, **params)
        where = f"{params} {question!r}"
        if isinstance(expected, dict):
            assert isinstance(answer, dict), f"{where}: {answer}"
            assert_items_equal(answer, expected, where)
            assert context[answer["start"] : answer["end"]] == answer["answer"]
        else:
            assert isinstance(answer, list), f"{where}: {answer}"
            assert_ranked_equal(answer, expected, lambda a: (a["start"], a["end"]), where)


def test_question_answering_splits_long_contexts_into_windows(ours):
    task = ours("question-answering").task
    params = task.parse_params({"max_seq_len": 128, "doc_stride": 32})
    encoded = task.encode(
        {"question": ["Where?", "Where?"], "context": ["short", LONG_CONTEXT]}, params
    )
    assert len(encoded.seqs) > 8  # one window for the short row, many for the long one
    assert all(len(ids) <= 128 for ids, _ in encoded.seqs)


def test_question_answering_bad_input(ours):
    pipe = ours("question-answering")
    with pytest.raises(BadRequest, match="context"):
        predict(pipe, {"question": ["Why?"], "context": [""]})
    with pytest.raises(BadRequest, match="too long"):
        predict(pipe, {"question": ["why " * 400], "context": ["because"]})
    with pytest.raises(InvalidParameter, match="doc_stride"):
        predict(
            pipe,
            {"question": ["Where does the fox live?"], "context": [LONG_CONTEXT]},
            {"max_seq_len": 64, "doc_stride": 60},
        )
    with pytest.raises(InvalidParameter, match="top_k"):
        predict(pipe, {"question": ["Why?"], "context": ["Because."]}, {"top_k": 0})


# ---- zero-shot classification -----------------------------------------------------------------
ZS_TEXTS = [
    "I love playing football on sunday",
    "The stock market crashed today, investors lost billions.",
    "Wahlen in Deutschland: die Regierung tritt zurück! 🗳️",
]
ZS_LABELS = ["sports", "finance", "politics", "cooking"]


def check_zero_shot(got: list[dict], texts: list[str], labels: list[list[str]], hf, **kwargs):
    for text, row_labels, pred in zip(texts, labels, got, strict=True):
        expected = hf(text, candidate_labels=row_labels, **kwargs)
        assert pred["sequence"] == expected["sequence"] == text
        assert sorted(pred["labels"]) == sorted(row_labels)
        ours_ranked = [
            {"label": lab, "score": s}
            for lab, s in zip(pred["labels"], pred["scores"], strict=True)
        ]
        ref_ranked = [
            {"label": lab, "score": s}
            for lab, s in zip(expected["labels"], expected["scores"], strict=True)
        ]
        assert_ranked_equal(ours_ranked, ref_ranked, lambda r: r["label"], f"{kwargs} {text!r}")


@pytest.mark.parametrize(
    "params",
    [{}, {"multi_label": True}, {"hypothesis_template": "Das Thema ist {}!"}],
    ids=["single", "multi", "template"],
)
def test_zero_shot_matches_pipeline(ours, reference, params):
    got = predict(
        ours("zero-shot-classification"),
        {"text": ZS_TEXTS},
        {"candidate_labels": ZS_LABELS, **params},
    )
    check_zero_shot(got, ZS_TEXTS, [ZS_LABELS] * 3, reference("zero-shot-classification"), **params)
    if not params.get("multi_label"):
        assert all(close(sum(p["scores"]), 1.0) for p in got)


def test_zero_shot_per_row_labels_column_and_json(ours, reference):
    pipe = ours("zero-shot-classification")
    hf = reference("zero-shot-classification")
    labels = [["sports", "finance"], ["finance"], ["politics", "weather", "sports", "music", "art"]]
    got = predict(pipe, {"text": ZS_TEXTS, "candidate_labels": labels})
    check_zero_shot(got, ZS_TEXTS, labels, hf)  # the one-label row uses the multi-label formula
    # the wire format: a shared comma-separated string column and the sequences alias
    body = json.dumps(
        {
            "inputs": {"sequences": ZS_TEXTS[:2], "candidate_labels": "sports, finance"},
            "params": {"multi_label": True},
        }
    ).encode()
    out, rows = pipe.invoke(body, "application/json")
    assert rows == 2
    check_zero_shot(
        json.loads(out)["predictions"],
        ZS_TEXTS[:2],
        [["sports", "finance"]] * 2,
        hf,
        multi_label=True,
    )


def test_zero_shot_bad_input(ours):
    pipe = ours("zero-shot-classification")
    with pytest.raises(BadRequest, match="candidate_labels"):
        predict(pipe, {"text": ["hello"]})
    with pytest.raises(InvalidParameter, match="hypothesis_template"):
        predict(
            pipe, {"text": ["hello"]}, {"candidate_labels": ["a"], "hypothesis_template": "no slot"}
        )


# ---- fill-mask ---------------------------------------------------------------------------------
MASK_TEXTS = [
    "Paris is the [MASK] of France.",
    "I [MASK] you [MASK] much.",
    "[MASK]",
    "Ünïcödé [MASK] — 東京, naïve café!",
    "A long sentence about nothing in particular " * 6 + "ends with [MASK].",
]


@pytest.mark.parametrize("top_k", [None, 1, 10])
def test_fill_mask_matches_pipeline(ours, reference, top_k):
    params = {} if top_k is None else {"top_k": top_k}
    got = predict(ours("fill-mask"), {"text": MASK_TEXTS}, params)
    hf = reference("fill-mask")
    for text, pred in zip(MASK_TEXTS, got, strict=True):
        expected = hf(text, **params)
        single = isinstance(expected[0], dict)
        per_mask = [pred] if single else pred
        ref_per_mask = [expected] if single else expected
        assert len(per_mask) == len(ref_per_mask) == text.count("[MASK]")
        for i, (o, r) in enumerate(zip(per_mask, ref_per_mask, strict=True)):
            assert len(o) == (top_k or 5)
            assert_ranked_equal(o, r, lambda p: p["token"], f"top_k={top_k} {text!r} mask {i}")


def test_fill_mask_without_mask_token_is_a_bad_request(ours):
    with pytest.raises(BadRequest, match=r"\[MASK\]") as err:
        predict(ours("fill-mask"), {"text": ["Paris is the [MASK] of France.", "no mask here"]})
    assert "Row 1" in err.value.message


# ---- cross-request batching --------------------------------------------------------------------
@pytest.mark.parametrize(
    "task,requests",
    [
        (
            "question-answering",
            [
                (
                    {"question": ["Where does the fox live?"], "context": [LONG_CONTEXT]},
                    {"top_k": 3},
                ),
                (
                    {
                        "question": [q for q, _ in QA_ROWS[:3]],
                        "context": [c for _, c in QA_ROWS[:3]],
                    },
                    {},
                ),
            ],
        ),
        (
            "zero-shot-classification",
            [
                ({"text": ZS_TEXTS}, {"candidate_labels": ZS_LABELS, "multi_label": True}),
                ({"text": ZS_TEXTS[:2], "candidate_labels": [["sports", "finance"], ["x"]]}, {}),
            ],
        ),
    ],
)
def test_mixed_batches_give_the_direct_results(ours, task, requests, monkeypatch):
    from exasol_mlflow_server.runtime import batcher as batcher_module

    # one batch for all requests: no token budget and no padding bound splits it
    monkeypatch.setattr(batcher_module, "MAX_PADDING", float("inf"))
    direct = ours(task)
    expected = [predict(direct, cols, params) for cols, params in requests]
    n_seqs = sum(
        len(
            direct.task.encode(
                direct.task.select(Payload(c, len(next(iter(c.values()))), p)),
                direct.task.parse_params(p),
            ).seqs
        )
        for c, p in requests
    )
    sizes: list[int] = []

    def run_batch(seqs):
        sizes.append(len(seqs))
        return direct.model.run_batch(seqs)

    batcher = Batcher(run_batch, max_batch_tokens=1 << 20, max_delay_s=0.5)
    mixed = Pipeline(direct.model, executor=batcher)
    start = threading.Barrier(len(requests))
    results: list[Any] = [None] * len(requests)

    def worker(i: int) -> None:
        start.wait()
        results[i] = predict(mixed, *requests[i])

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        batcher.close()
    assert sizes == [n_seqs], f"the requests' sequences were not run as one batch: {sizes}"
    assert all(r is not None for r in results)
    for got, want in zip(results, expected, strict=True):
        assert_same(got, want)


def assert_same(got: Any, want: Any) -> None:
    """Equal up to float noise from the different padding of a mixed batch."""
    if isinstance(want, dict):
        assert set(got) == set(want)
        for key in want:
            assert_same(got[key], want[key])
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w)
    elif isinstance(want, float):
        assert close(got, want, 1e-5)
    else:
        assert got == want
