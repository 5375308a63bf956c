"""One decoding batch: the rows of several requests stepping through the decoder together.

A :class:`Member` is one input row: its prompt, its :class:`~.search.Search` (1 row, or
``num_beams``), and the request it belongs to. :class:`DecodeBatch` prefills new members (for a
beam search the prompt runs once and its cache rows are repeated), then each :meth:`step`
feeds every row's last token, lets each search choose, reorders the cache for the beams, and
drops the rows of members that finished or whose request was cancelled (their cache is freed
at once). ``merge`` lets a newly prefilled batch join a running one between steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..batcher import Job
from .config import GenerationConfig
from .model import CausalLM, Rows, Seq2SeqLM
from .search import Search, StopCheck, make_search


@dataclass
class RowRequest:
    """What a task asks for one input row: the model input and the search's first tokens
    (the prompt for a decoder-only model, the decoder start token for an encoder-decoder)."""

    prompt: list[int]
    start: list[int]
    config: GenerationConfig
    stop: StopCheck | None = None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)

    @property
    def tokens(self) -> int:
        """Cache positions this row may hold at most (its memory bound)."""
        return self.config.num_beams * (len(self.prompt) + self.config.max_new_tokens + 1)


@dataclass
class Member:
    request: RowRequest
    job: Job
    index: int
    search: Search = field(init=False)

    def __post_init__(self) -> None:
        req = self.request
        self.search = make_search(req.config, req.start, req.stop, req.rng)


class DecodeBatch:
    def __init__(self, model: CausalLM | Seq2SeqLM, members: list[Member]) -> None:
        self.model = model
        rows, logits = model.prefill([m.request.prompt for m in members])
        widths = np.asarray([m.search.width for m in members])
        if (widths > 1).any():
            expand = np.repeat(np.arange(len(members)), widths)
            model.select(rows, expand)
            logits = logits[expand]
        self.rows: Rows = rows
        self.members = members
        self.finished: list[Member] = []
        self._advance(logits)

    @property
    def reserved(self) -> int:
        return sum(m.request.tokens for m in self.members)

    def step(self) -> list[Member]:
        """One decoding step; returns the members that finished in it."""
        tokens = np.concatenate([m.search.last_tokens() for m in self.members])
        return self._advance(self.model.step(self.rows, tokens))

    def _advance(self, logits: np.ndarray) -> list[Member]:
        keep: list[Member] = []
        finished: list[Member] = []
        index: list[int] = []
        offset = 0
        for m in self.members:
            width = m.search.width
            if not m.job.cancelled:
                parents = m.search.step(logits[offset : offset + width])
                if m.search.done:
                    finished.append(m)
                else:
                    keep.append(m)
                    index.extend((offset + parents).tolist())
            offset += width
        if len(index) != offset or index != list(range(offset)):
            self.model.select(self.rows, np.asarray(index, dtype=np.int64))
        self.members = keep
        self.finished = finished
        return finished

    def drop_cancelled(self) -> None:
        """Free the rows of cancelled requests now (between steps)."""
        if not any(m.job.cancelled for m in self.members):
            return
        index, keep, offset = [], [], 0
        for m in self.members:
            if not m.job.cancelled:
                keep.append(m)
                index.extend(range(offset, offset + m.search.width))
            offset += m.search.width
        self.model.select(self.rows, np.asarray(index, dtype=np.int64))
        self.members = keep

    def merge(self, other: DecodeBatch) -> bool:
        if not other.members:
            return True
        if not self.members or not self.model.merge(self.rows, other.rows):
            return False
        self.members = self.members + other.members
        return True
