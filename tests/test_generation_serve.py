"""Generative models behind the real server: MLflow's request shapes, generation settings as
``params``, the limits as 400s, and the request timeout mid-generation as a 504."""

from __future__ import annotations

import requests
from exasol_mlflow_server.runtime.model import load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload

from tests.conftest import exported_model_dir

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
