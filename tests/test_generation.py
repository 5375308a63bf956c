"""Generation parity: our numpy + ONNX Runtime loop vs transformers ``generate`` on the same fp32
model, token for token, for an encoder-decoder (T5) and two decoder-only models (GPT-2, a
Llama-style one with grouped-query attention); inputs of different lengths decoded in one
batch (padding must not change a row) and compared with ``generate`` on each text alone.
Plus sampling reproducibility and the limits (input length, max_new_tokens, deadline, queue).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from exasol_mlflow_server.runtime.errors import (
    BadRequest,
    DeadlineExceeded,
    InvalidParameter,
    ShuttingDown,
)
from exasol_mlflow_server.runtime.generation.scheduler import Scheduler
from exasol_mlflow_server.runtime.model import load_model
from exasol_mlflow_server.runtime.pipeline import Pipeline
from exasol_mlflow_server.runtime.protocol import Payload
from exasol_mlflow_server.runtime.tasks.base import TaskOptions

from exasol_mlflow_server import fixtures
from tests.conftest import GENERATION_TEXTS, exported_model_dir

TEXTS = GENERATION_TEXTS
KINDS = {"t5": "text2text-generation", "gpt2": "text-generation", "llama": "text-generation"}
SETTINGS = [
    {"max_new_tokens": 20},
    {"max_new_tokens": 20, "num_beams": 4},
    {"max_new_tokens": 16, "num_beams": 3, "length_penalty": 0.5, "early_stopping": True},
    {"max_new_tokens": 16, "num_beams": 2, "early_stopping": "never", "length_penalty": 1.5},
    {"max_new_tokens": 15, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2},
    {"max_new_tokens": 15, "num_beams": 2, "no_repeat_ngram_size": 3, "min_new_tokens": 6},
]


@pytest.fixture(scope="module")
def world():
    """kind -> (loaded model, HF model, HF tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    out = {}
    for kind, task in KINDS.items():
        src = fixtures.generative_model_dir(kind)
        exported = exported_model_dir(task, "none", source=src if kind == "llama" else None)
        auto = AutoModelForSeq2SeqLM if kind == "t5" else AutoModelForCausalLM
        out[kind] = (load_model(exported, device="cpu"), auto.from_pretrained(src).eval(),
                     AutoTokenizer.from_pretrained(src))  # fmt: skip
    return out


def ours(model, texts, params) -> list[list[int]]:
    task = model.task
    encoded = task.encode({"text": texts}, task.parse_params(params))
    return Pipeline(model).executor.execute(encoded.seqs)


def theirs(hf, tok, text, params, eos) -> list[int]:
    enc = tok([text], return_tensors="pt")
    with torch.no_grad():
        seq = hf.generate(**enc, **params, pad_token_id=tok.pad_token_id or eos)
    seq = seq[0].tolist()
    seq = seq[1:] if hf.config.is_encoder_decoder else seq[enc["input_ids"].shape[1] :]
    return seq[: seq.index(eos) + 1] if eos in seq else seq


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize(
    "params", SETTINGS, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items())
)
def test_token_identical_to_transformers_generate(world, kind, params):
    model, hf, tok = world[kind]
    eos = hf.generation_config.eos_token_id
    params = {"num_beams": 1, "do_sample": False, **params}  # not the pipelines' defaults
    got = ours(model, TEXTS, params)
    expected = [theirs(hf, tok, t, params, eos) for t in TEXTS]
    assert got == expected
    assert len({len(g) for g in got}) > 1 and max(len(g) for g in got) >= 5  # not degenerate


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_the_io_binding_path_gives_the_same_tokens(world, kind, monkeypatch):
    """The CUDA path -- IO binding, the KV cache as OrtValues fed back step to step, reordered
    through the host -- driven on the CPU (binding to "cpu"), since no GPU runs here: the same
    tokens as the plain numpy path, with beams (reordering) and rows of different lengths."""
    from exasol_mlflow_server.runtime import session

    model_dir = world[kind][0].path
    init = session.OnnxRunner.__init__

    def bound_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.bind_device = "cpu"

    monkeypatch.setattr(session.OnnxRunner, "__init__", bound_init)
    bound = load_model(model_dir, device="cpu")
    assert bound.lm.on_device, "the cache is bound as OrtValues"
    for params in ({"max_new_tokens": 12}, {"max_new_tokens": 12, "num_beams": 3}):
        params = {"num_beams": 1, "do_sample": False, **params}
        assert ours(bound, TEXTS, params) == ours(world[kind][0], TEXTS, params)


@pytest.mark.parametrize("kind", list(KINDS))
def test_padding_and_batch_mates_do_not_change_a_row(world, kind):
    model = world[kind][0]
    params = {"max_new_tokens": 12, "num_beams": 3, "do_sample": False}
    batched = ours(model, TEXTS, params)
    assert batched == [ours(model, [t], params)[0] for t in TEXTS]


def test_strings_and_defaults_like_the_pipelines(world):
    """Strings as the pipelines (which MLflow's flavor runs) return them, with their defaults:
    text2text/translation/summarization beam-search (4 beams) unless the model says otherwise;
    text-generation samples (temperature 0.7) unless told not to."""
    from transformers import pipeline

    model, hf, tok = world["t5"]
    pipe = pipeline("text2text-generation", model=hf, tokenizer=tok)
    got = Pipeline(model).predict_payload(Payload({"text": TEXTS}, len(TEXTS), {}))[0]
    assert got == [r["generated_text"] for r in pipe(TEXTS)]
    assert model.manifest.extra["generation"]["defaults"] == {"num_beams": 4, "max_length": 64}
    model, hf, tok = world["gpt2"]
    pipe = pipeline("text-generation", model=hf, tokenizer=tok)
    params = {"max_new_tokens": 10, "do_sample": False}
    got = Pipeline(model).predict_payload(Payload({"text": TEXTS}, len(TEXTS), params))[0]
    assert got == [r[0]["generated_text"] for r in pipe(TEXTS, **params)]
    params["return_full_text"] = False
    got = Pipeline(model).predict_payload(Payload({"prompt": TEXTS}, len(TEXTS), params))[0]
    assert got == [r[0]["generated_text"] for r in pipe(TEXTS, **params)]
    assert model.manifest.extra["generation"]["defaults"]["do_sample"] is True


def test_sampling_is_reproducible_with_a_seed(world):
    model = world["gpt2"][0]
    params = {
        "max_new_tokens": 12,
        "do_sample": True,
        "temperature": 1.5,
        "top_k": 0,
        "top_p": 0.95,
    }
    first = ours(model, TEXTS, {**params, "seed": 3})
    assert first == ours(model, TEXTS, {**params, "seed": 3})
    assert first[1:3] == ours(model, TEXTS[:3], {**params, "seed": 3})[1:3]  # batch-independent
    assert first != ours(model, TEXTS, {**params, "seed": 4})
    beams = {**params, "num_beams": 2, "seed": 5}
    assert ours(model, TEXTS, beams) == ours(model, TEXTS, beams)


def test_limits(world):
    model = world["t5"][0]
    with pytest.raises(InvalidParameter, match="over this server's limit 256"):
        ours(model, ["hi"], {"max_new_tokens": 257})
    with pytest.raises(InvalidParameter, match="num_beams"):
        ours(model, ["hi"], {"num_beams": 0})
    small = load_model(model.path, device="cpu", options=TaskOptions(max_input_tokens=8))
    with pytest.raises(BadRequest, match="Row 1 has more than 8 tokens"):
        ours(
            small,
            ["short", "a text that is clearly longer than eight tokens of this tokenizer"],
            {},
        )


def test_deadline_mid_generation_frees_the_cache(world):
    model = world["gpt2"][0]
    scheduler = Scheduler(model.lm)
    try:
        task = model.task
        long = task.encode(
            {"text": ["Hello"] * 16},
            task.parse_params({"max_new_tokens": 240, "min_new_tokens": 240, "num_beams": 4}),
        )
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            scheduler.execute(long.seqs, deadline=time.monotonic() + 0.1)
        assert time.monotonic() - started < 1.0
        for _ in range(100):  # the loop drops the rows before its next step
            if scheduler.active_rows == 0:
                break
            time.sleep(0.01)
        assert scheduler.active_rows == 0 and scheduler.queued_rows == 0
        short = task.encode({"text": ["Hello"]}, task.parse_params({"max_new_tokens": 3}))
        assert len(scheduler.execute(short.seqs, deadline=time.monotonic() + 10)[0]) <= 3
    finally:
        scheduler.close()


def test_close_fails_running_and_waiting_work_at_once(world):
    """Like the encoder batcher: close() fails what is decoding or queued with ShuttingDown (a
    503 that says retry elsewhere) at once, and later requests too -- none waits for a deadline."""
    model = world["gpt2"][0]
    task = model.task
    scheduler = Scheduler(model.lm)
    errors: list[BaseException] = []
    params = task.parse_params({"max_new_tokens": 240, "min_new_tokens": 240})

    def run() -> None:
        try:
            scheduler.execute(task.encode({"text": ["Hello"]}, params).seqs, time.monotonic() + 60)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for _ in range(1000):
        if scheduler.active_rows:
            break
        time.sleep(0.005)
    started = time.monotonic()
    scheduler.close()
    for thread in threads:
        thread.join(10)
    assert time.monotonic() - started < 5
    assert len(errors) == 3 and all(isinstance(e, ShuttingDown) for e in errors), errors
    with pytest.raises(ShuttingDown):
        scheduler.execute(task.encode({"text": ["late"]}, params).seqs, time.monotonic() + 5)


def test_short_requests_join_a_long_generation(world):
    """Step-level batching: a short request finishes while a long one is still decoding."""
    model = world["gpt2"][0]
    task = model.task
    scheduler = Scheduler(model.lm)
    done: dict[str, float] = {}

    def run(name, params):
        encoded = task.encode({"text": ["Hello world"]}, task.parse_params(params))
        scheduler.execute(encoded.seqs, deadline=time.monotonic() + 60)
        done[name] = time.monotonic()

    try:
        long = threading.Thread(
            target=run, args=("long", {"max_new_tokens": 200, "min_new_tokens": 200})
        )
        long.start()
        for _ in range(1000):
            if scheduler.active_rows:
                break
            time.sleep(0.005)
        assert scheduler.active_rows == 1
        run("short", {"max_new_tokens": 2})
        long.join(60)
        assert done["short"] < done["long"]
    finally:
        scheduler.close()


def test_int8_export_agrees_with_fp32(world):
    exported = exported_model_dir("text2text-generation", "int8")
    quality = __import__("json").loads((exported / "quality.json").read_text())
    assert quality["primary"] == {"metric": "exact_match", "value": quality["exact_match"]}
    assert quality["token_agreement"] >= 0.9 and quality["vs_fp32_onnx"]["token_agreement"] >= 0.9
    int8 = load_model(exported, device="cpu")
    assert all(len(r) >= 1 for r in ours(int8, TEXTS, {"max_new_tokens": 8}))
    assert np.all([isinstance(t, int) for r in ours(int8, TEXTS[:1], {}) for t in r])
