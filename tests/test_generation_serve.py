"""Generative models behind the real server: MLflow's request shapes, generation settings as
``params``, the limits as 400s, and the request timeout mid-generation as a 504."""

from __future__ import annotations

import time

import requests
from exasol_mlflow_server.runtime.model import load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload

from tests.conftest import exported_model_dir, metric_sum

TEXTS = ["Hello world", "The meeting was moved to Thursday.", "Paris"]
PARAMS = {"max_new_tokens": 12, "num_beams": 2}


def post(srv, body, timeout=60):
    return requests.post(srv.url + "/invocations", json=body, timeout=timeout)


def test_mlflow_shapes_and_params(server_for):
    srv = server_for("text2text-generation")
    model = load_model(exported_model_dir("text2text-generation"), device="cpu")
    expected = Pipeline(model).predict_payload(Payload({"text": TEXTS}, len(TEXTS), PARAMS))[0]
    assert len(set(expected)) == len(TEXTS)
    for body in (
        {"inputs": TEXTS, "params": PARAMS},
        {"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}, "params": PARAMS},
        {"dataframe_records": [{"text": t} for t in TEXTS], "params": PARAMS},
    ):
        resp = post(srv, body)
        assert resp.status_code == 200, resp.text
        assert resp.json() == {"predictions": expected}
    meta = requests.get(srv.url + "/metadata", timeout=10).json()
    assert meta["task"] == "text2text-generation"


def test_limits_are_400s(server_for):
    srv = server_for("text-generation", "--max-input-tokens", "8", "--max-new-tokens-limit", "32")
    resp = post(srv, {"inputs": ["a prompt that is clearly longer than eight tokens, surely"]})
    assert resp.status_code == 400 and "more than 8 tokens" in resp.json()["message"]
    resp = post(srv, {"inputs": ["Paris"], "params": {"max_new_tokens": 33}})
    assert resp.status_code == 400 and "--max-new-tokens-limit" in resp.json()["message"]
    assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    resp = post(srv, {"inputs": ["Paris"], "params": {"max_new_tokens": 4, "do_sample": False}})
    assert resp.status_code == 200 and resp.json()["predictions"][0].startswith("Paris")


def test_timeout_mid_generation_is_504_and_the_server_goes_on(server_for):
    srv = server_for("text2text-generation", "--request-timeout", "0.2")
    long = {"max_new_tokens": 256, "min_new_tokens": 256, "num_beams": 4}
    resp = post(srv, {"inputs": TEXTS * 8, "params": long})
    assert resp.status_code == 504 and resp.json()["error_code"] == "DEADLINE_EXCEEDED"
    resp = post(srv, {"inputs": ["Paris"], "params": {"max_new_tokens": 3}})
    assert resp.status_code == 200, resp.text


def test_sampled_rows_are_never_shared_but_greedy_ones_are():
    """Identical prompts share one answer (dedup, result cache) unless it is sampled."""
    from exasol_mlflow_server.runtime.result_cache import ResultCache

    model = load_model(exported_model_dir("text-generation"), device="cpu")
    seen: list[int] = []
    pipeline = Pipeline(model, cache=ResultCache(1 << 20))
    execute = pipeline.executor.execute
    pipeline.executor.execute = lambda seqs, deadline=None: (
        seen.append(len(seqs)) or execute(seqs, deadline)
    )
    rows = ["Once upon a time"] * 4
    greedy = {"max_new_tokens": 6, "do_sample": False}
    out = pipeline.predict_payload(Payload({"text": rows}, 4, greedy))[0]
    assert seen == [1] and len(set(out)) == 1  # computed once, fanned out
    pipeline.predict_payload(Payload({"text": rows}, 4, greedy))
    assert seen == [1]  # the second time from the cache
    sampled = {"max_new_tokens": 6, "do_sample": True, "temperature": 1.5, "seed": 7}
    out = pipeline.predict_payload(Payload({"text": rows}, 4, sampled))[0]
    assert seen == [1, 4]  # every row its own draw
    assert pipeline.cache.stats().entries == 1  # and nothing sampled was kept


def test_a_long_generation_does_not_starve_an_encoder_model_beside_it(export_dir):
    """One process, an embedding model and a generative one: 100-row embedding requests keep
    being answered while a long beam-search generation runs (each model has its own scheduler
    threads; the generation yields between decoding steps). Were they queued behind it, at most
    one would be answered before it ends."""
    import threading

    from tests.serverproc import ServerProcess

    emb = export_dir("feature-extraction", "int8")
    gen = exported_model_dir("text2text-generation")
    args = ("--model", f"gen={gen}", "--request-timeout", "600", "--result-cache-mb", "0")
    srv = ServerProcess(emb, *args)
    srv.start()
    try:
        prompts = [f"text {i}: the meeting was moved to Thursday." for i in range(24)]
        long = {"max_new_tokens": 256, "min_new_tokens": 256, "num_beams": 4}
        outcome: dict = {}

        def generate() -> None:
            r = requests.post(
                srv.url + "/models/gen/invocations",
                json={"inputs": prompts, "params": long},
                timeout=600,
            )
            outcome["status"] = r.status_code

        thread = threading.Thread(target=generate, daemon=True)
        thread.start()

        def in_flight(srv) -> float:  # only the generation is in flight at first
            text = requests.get(srv.url + "/metrics", timeout=10).text
            return metric_sum(text, "ems_inflight_requests")

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and in_flight(srv) < 1:
            time.sleep(0.02)
        answered_during = 0
        for k in range(1000):
            rows = [f"request {k} row {i}: the quick brown fox jumps" for i in range(100)]
            r = requests.post(srv.url + "/invocations", json={"inputs": rows}, timeout=120)
            assert r.status_code == 200 and len(r.json()["predictions"]) == 100
            if not thread.is_alive():
                break
            answered_during += 1
        thread.join(600)
        print(f"\n{answered_during} embedding requests answered during the generation")
        assert outcome.get("status") == 200
        assert answered_during >= 3, f"{answered_during} embedding requests during the generation"
    finally:
        srv.stop()
