"""Every logits processor and warper against transformers' own, on random logits (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from exasol_mlflow_server.runtime.generation import processors as P
from exasol_mlflow_server.runtime.generation.config import GenerationConfig
from transformers.generation import logits_process as lp

VOCAB = 40


@pytest.fixture
def case():
    rng = np.random.default_rng(7)
    scores = (rng.standard_normal((4, VOCAB)) * 3).astype(np.float32)
    history = rng.integers(0, 12, size=(4, 9)).astype(np.int64)  # small ids: repeats happen
    return scores, history


def reference(processor, scores, history) -> np.ndarray:
    return processor(torch.from_numpy(history), torch.from_numpy(scores.copy())).numpy()


def same(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert np.array_equal(np.isinf(ours), np.isinf(theirs))
    np.testing.assert_allclose(ours[~np.isinf(ours)], theirs[~np.isinf(theirs)], rtol=1e-6)


@pytest.mark.parametrize("penalty", [1.3, 0.7])
def test_repetition_penalty(case, penalty):
    scores, history = case
    same(
        P.repetition_penalty(scores, history, penalty),
        reference(lp.RepetitionPenaltyLogitsProcessor(penalty), scores, history),
    )


@pytest.mark.parametrize("n", [1, 2, 3, 12])
def test_no_repeat_ngram(case, n):
    scores, history = case
    history[:, 7:9] = history[:, 1:3]  # ends with an earlier bigram: its continuation is banned
    ours = P.no_repeat_ngram(scores, history, n)
    same(ours, reference(lp.NoRepeatNGramLogitsProcessor(n), scores, history))
    if n <= 3:
        assert np.isinf(ours).any()


def test_bad_words(case):
    scores, history = case
    words = [[5], [history[0, -1], 7], [history[1, -2], history[1, -1], 9], [1]]
    eos = (1,)  # [eos] alone is never banned, as in transformers
    ours = P.bad_words(scores, history, tuple(map(tuple, words)), eos)
    same(ours, reference(lp.NoBadWordsLogitsProcessor(words, eos_token_id=1), scores, history))
    assert np.isinf(ours[0, 7]) and np.isinf(ours[1, 9]) and not np.isinf(ours[:, 1]).any()


@pytest.mark.parametrize("cur_len", [3, 9])
def test_min_length_and_min_new_tokens(case, cur_len):
    scores, history = case
    history = history[:, :cur_len]
    cfg = GenerationConfig(max_new_tokens=20, min_length=5, eos_token_ids=(2, 3), start_len=1)
    ours = P.process(scores, history, cfg)
    same(ours, reference(lp.MinLengthLogitsProcessor(5, [2, 3]), scores, history))
    cfg = GenerationConfig(max_new_tokens=20, min_new_tokens=4, eos_token_ids=(2,), start_len=2)
    ours = P.process(scores, history, cfg)
    same(ours, reference(lp.MinNewTokensLengthLogitsProcessor(2, 4, 2), scores, history))


def test_forced_bos_and_eos(case):
    scores, history = case
    cfg = GenerationConfig(max_new_tokens=9, forced_bos_token_id=4, start_len=1)
    same(
        P.process(scores, history[:, :1], cfg),
        reference(lp.ForcedBOSTokenLogitsProcessor(4), scores, history[:, :1]),
    )
    cfg = GenerationConfig(max_new_tokens=9, forced_eos_token_id=(2,), start_len=1)
    ours = P.process(scores, history, cfg)  # cur_len 9 == max_length (10) - 1
    same(ours, reference(lp.ForcedEOSTokenLogitsProcessor(10, 2), scores, history))
    assert np.isinf(ours).sum() == 4 * (VOCAB - 1)


def test_temperature_top_k_top_p(case):
    scores, history = case
    same(P.temperature(scores, 0.7), reference(lp.TemperatureLogitsWarper(0.7), scores, history))
    for k in (1, 5, VOCAB + 3):
        same(P.top_k(scores, k), reference(lp.TopKLogitsWarper(k), scores, history))
    same(
        P.top_k(scores, 1, 3),
        reference(lp.TopKLogitsWarper(1, min_tokens_to_keep=3), scores, history),
    )
    for p in (0.1, 0.5, 0.9):
        same(P.top_p(scores, p), reference(lp.TopPLogitsWarper(p), scores, history))
    same(
        P.top_p(scores, 0.01, 2),
        reference(lp.TopPLogitsWarper(0.01, min_tokens_to_keep=2), scores, history),
    )


def test_log_softmax_matches_torch(case):
    scores, _ = case
    np.testing.assert_allclose(
        P.log_softmax(scores), torch.log_softmax(torch.from_numpy(scores), -1).numpy(), atol=1e-6
    )
