"""Logits processors and warpers, in numpy, with transformers' semantics and order.

Each works on the scores of the rows of one search (``scores``: rows x vocab, float32) and
their token histories (``history``: rows x cur_len -- the prompt of a decoder-only model or the
decoder start token, then the generated tokens). Processors (penalties, bans, forced tokens)
run on raw logits for greedy and sampling and on log-probabilities for beam search, as in
``GenerationMixin._get_logits_processor``; warpers (temperature, top-k, top-p) only when
sampling. The order is transformers': repetition penalty, no-repeat n-grams, bad words, min
length, min new tokens, forced BOS, forced EOS; then temperature, top-k, top-p.
"""

from __future__ import annotations

import numpy as np

from .config import GenerationConfig

NEG_INF = np.float32(-np.inf)


def repetition_penalty(scores: np.ndarray, history: np.ndarray, penalty: float) -> np.ndarray:
    """Seen tokens: negative scores are multiplied by ``penalty``, positive ones divided."""
    rows = np.arange(len(scores))[:, None]
    picked = scores[rows, history]
    picked = np.where(picked < 0, picked * np.float32(penalty), picked / np.float32(penalty))
    out = scores.copy()
    out[rows, history] = picked
    return out


def banned_ngram_tokens(tokens: list[int], n: int) -> list[int]:
    """Tokens that would repeat an n-gram already in ``tokens`` (fairseq's rule)."""
    cur_len = len(tokens)
    if cur_len + 1 < n:
        return []
    prefix = tuple(tokens[cur_len + 1 - n :]) if n > 1 else ()
    banned = []
    for i in range(cur_len - n + 1):
        if tuple(tokens[i : i + n - 1]) == prefix:
            banned.append(tokens[i + n - 1])
    return banned


def no_repeat_ngram(scores: np.ndarray, history: np.ndarray, n: int) -> np.ndarray:
    out = scores.copy()
    for row, tokens in enumerate(history.tolist()):
        banned = banned_ngram_tokens(tokens, n)
        if banned:
            out[row, banned] = NEG_INF
    return out


def bad_words(
    scores: np.ndarray,
    history: np.ndarray,
    words: tuple[tuple[int, ...], ...],
    eos: tuple[int, ...],
) -> np.ndarray:
    """Ban single tokens always, and a sequence's last token after the rest of it."""
    out = scores.copy()
    words = tuple(w for w in words if not (len(w) == 1 and w[0] in eos))
    for word in words:
        if len(word) == 1:
            out[:, word[0]] = NEG_INF
        elif len(word) <= history.shape[1]:
            prefix = np.asarray(word[:-1], dtype=history.dtype)
            match = np.all(history[:, history.shape[1] - len(prefix) :] == prefix, axis=1)
            out[match, word[-1]] = NEG_INF
    return out


def suppress(scores: np.ndarray, tokens: tuple[int, ...]) -> np.ndarray:
    out = scores.copy()
    out[:, list(tokens)] = NEG_INF
    return out


def force(scores: np.ndarray, tokens: tuple[int, ...]) -> np.ndarray:
    out = np.full_like(scores, NEG_INF)
    out[:, list(tokens)] = 0
    return out


def temperature(scores: np.ndarray, value: float) -> np.ndarray:
    return scores / np.float32(value)


def top_k(scores: np.ndarray, k: int, min_keep: int = 1) -> np.ndarray:
    """Keep the ``k`` best scores per row (and ties of the k-th); the rest become -inf."""
    k = min(max(k, min_keep), scores.shape[-1])
    kth = np.partition(scores, -k, axis=-1)[:, -k][:, None]
    return np.where(scores < kth, NEG_INF, scores)


def top_p(scores: np.ndarray, p: float, min_keep: int = 1) -> np.ndarray:
    """Keep the smallest set of best tokens whose probability reaches ``p`` (nucleus)."""
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending, as transformers sorts
    ordered = np.take_along_axis(scores, order, axis=-1)
    cumulative = np.cumsum(softmax(ordered), axis=-1)
    remove = cumulative <= np.float32(1 - p)
    remove[:, -min_keep:] = False
    mask = np.empty_like(remove)
    np.put_along_axis(mask, order, remove, axis=-1)
    return np.where(mask, NEG_INF, scores)


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def process(scores: np.ndarray, history: np.ndarray, cfg: GenerationConfig) -> np.ndarray:
    """All active processors, in transformers' order (not the sampling warpers)."""
    cur_len = history.shape[1]
    if cfg.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, history, cfg.repetition_penalty)
    if cfg.no_repeat_ngram_size > 0:
        scores = no_repeat_ngram(scores, history, cfg.no_repeat_ngram_size)
    if cfg.bad_words_ids:
        scores = bad_words(scores, history, cfg.bad_words_ids, cfg.eos_token_ids)
    if cfg.eos_token_ids and (
        cur_len < cfg.min_length or cur_len - cfg.start_len < cfg.min_new_tokens
    ):
        scores = suppress(scores, cfg.eos_token_ids)
    if cfg.forced_bos_token_id is not None and cur_len == 1:
        scores = force(scores, (cfg.forced_bos_token_id,))
    if cfg.forced_eos_token_id and cur_len == cfg.max_length - 1:
        scores = force(scores, cfg.forced_eos_token_id)
    return scores


def warp(scores: np.ndarray, cfg: GenerationConfig, min_keep: int = 1) -> np.ndarray:
    """The sampling warpers: temperature, top-k, top-p."""
    if cfg.temperature != 1.0:
        scores = temperature(scores, cfg.temperature)
    if cfg.top_k:
        scores = top_k(scores, cfg.top_k, min_keep)
    if cfg.top_p < 1.0:
        scores = top_p(scores, cfg.top_p, min_keep)
    return scores
