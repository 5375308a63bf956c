"""Search strategies for one input row: greedy, sampling, and beam search (with or without
sampling), each a small state machine fed one step of logits at a time.

A search owns ``width`` rows of the decoding batch (1, or ``num_beams``). :meth:`Search.step`
takes those rows' logits (float32), picks the next token of each row and returns, per row, the
index of the row (within this search) whose cache it continues -- beam search reorders its
beams. Beam search is transformers' vectorised ``_beam_search`` (4.50+) for one batch item:
the top ``2 x num_beams`` continuations, running beams, a pool of the ``num_beams`` best
finished hypotheses scored ``sum(logprobs) / generated_length ** length_penalty``, and the same
early-stopping rule (``True``, ``False`` heuristic, ``"never"``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from . import processors as P
from .config import GenerationConfig

StopCheck = Callable[[list[int]], bool]  # generated ids -> a stop string was produced
BIG = np.float32(1.0e9)


class Search:
    width: int
    done: bool = False

    def __init__(
        self,
        cfg: GenerationConfig,
        prompt: list[int],
        stop: StopCheck | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.cfg = cfg
        self.start_len = len(prompt)
        self.stop = stop if cfg.stop else None
        self.rng = rng if rng is not None else np.random.default_rng()

    def last_tokens(self) -> np.ndarray:
        raise NotImplementedError

    def step(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def result(self) -> list[int]:
        """The generated token ids (the EOS token included when it ended the row)."""
        raise NotImplementedError

    def _hits(self, tokens: list[int]) -> bool:
        """Does a full sequence (start + generated) stop here? EOS, max length or stop string."""
        cfg = self.cfg
        if tokens[-1] in cfg.eos_token_ids or len(tokens) >= cfg.max_length:
            return True
        return self.stop is not None and self.stop(tokens[self.start_len :])


class Greedy(Search):
    """Greedy decoding, or multinomial sampling when ``do_sample`` (per-row random generator)."""

    width = 1

    def __init__(
        self,
        cfg: GenerationConfig,
        prompt: list[int],
        stop: StopCheck | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(cfg, prompt, stop, rng)
        self.tokens = list(prompt)

    def last_tokens(self) -> np.ndarray:
        return np.asarray(self.tokens[-1:], dtype=np.int64)

    def step(self, logits: np.ndarray) -> np.ndarray:
        history = np.asarray([self.tokens], dtype=np.int64)
        scores = P.process(logits, history, self.cfg)
        if self.cfg.do_sample:
            probs = P.softmax(P.warp(scores, self.cfg)).astype(np.float64)[0]
            token = int(_sample(self.rng, probs, 1)[0])
        else:
            token = int(np.argmax(scores[0]))
        self.tokens.append(token)
        self.done = self._hits(self.tokens)
        return np.zeros(1, dtype=np.int64)

    def result(self) -> list[int]:
        return self.tokens[self.start_len :]


class BeamSearch(Search):
    def __init__(
        self,
        cfg: GenerationConfig,
        prompt: list[int],
        stop: StopCheck | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        super().__init__(cfg, prompt, stop, rng)
        k = cfg.num_beams
        self.width = k
        self.keep = max(2, 1 + len(cfg.eos_token_ids)) * k
        self.running = np.tile(np.asarray(prompt, dtype=np.int64), (k, 1))
        self.running_scores = np.zeros(k, dtype=np.float32)
        self.running_scores[1:] = -BIG
        self.finished: list[np.ndarray] = [self.running[0]] * k
        self.finished_scores = np.full(k, -BIG, dtype=np.float32)
        self.is_finished = np.zeros(k, dtype=bool)
        self.improvable = True

    def last_tokens(self) -> np.ndarray:
        return self.running[:, -1].copy()

    def step(self, logits: np.ndarray) -> np.ndarray:
        cfg, k = self.cfg, self.width
        cur_len = self.running.shape[1]
        vocab = logits.shape[-1]
        log_probs = P.process(P.log_softmax(logits), self.running, cfg)
        if cfg.do_sample:
            log_probs = P.warp(log_probs, cfg, min_keep=len(cfg.eos_token_ids) + 1)
        flat = (log_probs + self.running_scores[:, None]).reshape(-1)
        if cfg.do_sample:  # sample without replacement from the accumulated scores
            probs = P.softmax(flat[None, :]).astype(np.float64)[0]
            top = _sample(self.rng, probs, self.keep)
        else:
            top = _top(flat, self.keep)
        cand_scores = flat[top]
        cand_beams = top // vocab
        cand = np.concatenate([self.running[cand_beams], (top % vocab)[:, None]], axis=1)
        hits = np.asarray([self._hits(row) for row in cand.tolist()])

        # running beams for the next step: the best k candidates that did not stop
        run_scores = cand_scores + hits.astype(np.float32) * -BIG
        order = _top(run_scores, k)
        self.running = cand[order]
        self.running_scores = run_scores[order]

        # finished pool: candidates among the top k that stopped, length-penalised
        just_done = hits.copy()
        just_done[k:] = False
        penalised = cand_scores / np.float32((cur_len + 1 - self.start_len) ** cfg.length_penalty)
        if self.is_finished.all() and cfg.early_stopping is True:
            penalised = penalised - BIG
        if not self.improvable:
            penalised = penalised - BIG
        penalised = penalised + (~just_done).astype(np.float32) * -BIG
        merged_scores = np.concatenate([self.finished_scores, penalised])
        best = _top(merged_scores, k)
        pool = self.finished + list(cand)
        merged_done = np.concatenate([self.is_finished, just_done])
        self.finished = [pool[i] for i in best]
        self.finished_scores = merged_scores[best]
        self.is_finished = merged_done[best]

        self.improvable = self.improvable and self._may_improve(cur_len + 1)
        all_done = self.is_finished.all() and cfg.early_stopping is True
        self.done = not self.improvable or all_done or bool(hits.all())
        return cand_beams[order]

    def _may_improve(self, cur_len: int) -> bool:
        """transformers' ``_check_early_stop_heuristic`` for one batch item."""
        cfg = self.cfg
        if cfg.early_stopping == "never" and cfg.length_penalty > 0.0:
            length = cfg.max_length - self.start_len
        else:
            length = cur_len - self.start_len
        best_running = self.running_scores[0] / np.float32(length**cfg.length_penalty)
        worst = np.where(self.is_finished, self.finished_scores.min(), -BIG)
        return bool(np.any(best_running > worst))

    def result(self) -> list[int]:
        return self.finished[0][self.start_len :].tolist()


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values, best first (ties: lower index first)."""
    part = np.argpartition(-values, k - 1)[:k] if k < len(values) else np.arange(len(values))
    return part[np.argsort(-values[part], kind="stable")]


def _sample(rng: np.random.Generator, probs: np.ndarray, n: int) -> np.ndarray:
    """``n`` distinct indices drawn with probabilities ``probs`` (one: inverse CDF)."""
    probs = probs / probs.sum()
    if n == 1:
        cdf = np.cumsum(probs)
        return np.asarray(
            [min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(probs) - 1)]
        )
    live = int(np.count_nonzero(probs))
    if live >= n:
        return rng.choice(len(probs), size=n, replace=False, p=probs)
    # fewer candidates than beams x 2 survive the warpers (torch.multinomial would raise):
    # take them all, then fill with impossible ones (-inf: they never win)
    chosen = rng.choice(len(probs), size=live, replace=False, p=probs)
    rest = np.setdiff1d(np.arange(len(probs)), chosen)[: n - live]
    return np.concatenate([chosen, rest])


def make_search(
    cfg: GenerationConfig, prompt: list[int], stop: StopCheck | None, rng: np.random.Generator
) -> Search:
    if cfg.num_beams > 1:
        return BeamSearch(cfg, prompt, stop, rng)
    return Greedy(cfg, prompt, stop, rng)
