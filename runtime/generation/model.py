"""The exported generative model as two calls: ``prefill`` (new rows -> first logits and their
:class:`Rows` state) and ``step`` (last tokens -> next logits), plus the row operations the
scheduler needs (``select``: reorder/drop/expand rows, ``merge``: let new rows join).

* Decoder-only (``model.onnx`` of optimum's ``text-generation-with-past``): prompts are
  left-padded; ``attention_mask`` covers the cached positions and ``position_ids`` count each
  row's real tokens, as transformers' ``prepare_inputs_for_generation`` does, so padding does
  not change a row's result and rows of different lengths can join a running batch (the
  shorter cache is left-padded, hidden by the mask).
* Encoder-decoder (``encoder_model.onnx`` + ``decoder_model_merged.onnx``): the first decoder
  step runs the no-cache branch (``use_cache_branch`` false) and yields the cross-attention K/V,
  later steps the cache branch. The decoder has no self-attention mask, so only rows at the
  same decoding step can share a batch; rows with different encoder lengths can (the encoder
  side is padded and masked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..session import OnnxRunner
from .cache import KVCache, past_name
from .config import ModelFacts


@dataclass
class Rows:
    """The decoding state of a batch of rows."""

    cache: KVCache  # self-attention K/V
    mask: np.ndarray  # decoder-only: mask over cached positions; encoder-decoder: encoder mask
    positions: np.ndarray | None = None  # decoder-only: each row's next position id
    cross: KVCache | None = None  # encoder-decoder: cross-attention K/V

    @property
    def count(self) -> int:
        return len(self.mask)


class CausalLM:
    def __init__(self, runner: OnnxRunner, facts: ModelFacts) -> None:
        self.runner, self.facts = runner, facts
        self.present = [o for o in runner.output_names if o.startswith("present.")]
        self.dtype = runner.input_types.get(past_name(self.present[0]), np.float32)
        self.outputs = ["logits", *self.present]
        self.on_device = frozenset(self.present) if runner.bind_device else frozenset()

    def prefill(self, prompts: list[list[int]]) -> tuple[Rows, np.ndarray]:
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = np.full((n, width), self.facts.pad_token_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = p
            mask[i, width - len(p) :] = 1
        positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 1)
        f = self.facts
        cache = KVCache.empty(
            [past_name(p) for p in self.present], n, f.num_kv_heads, f.head_dim, self.dtype,
            self.runner,
        )  # fmt: skip
        rows = Rows(cache, mask, mask.sum(axis=1))
        logits = self._run(rows, ids, mask, positions)
        return rows, logits

    def step(self, rows: Rows, tokens: np.ndarray) -> np.ndarray:
        mask = np.concatenate([rows.mask, np.ones((rows.count, 1), dtype=np.int64)], axis=1)
        logits = self._run(rows, tokens[:, None], mask, rows.positions[:, None])
        rows.mask = mask
        rows.positions = rows.positions + 1
        return logits

    def _run(self, rows: Rows, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray) -> np.ndarray:
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        feeds.update(rows.cache.values)
        out = self.runner.run_raw(feeds, self.outputs, self.on_device)
        rows.cache.values = {past_name(p): out[p] for p in self.present}
        return out["logits"][:, -1].astype(np.float32)

    def select(self, rows: Rows, index: np.ndarray) -> None:
        rows.cache.select(index)
        rows.mask = rows.mask[index]
        rows.positions = rows.positions[index]
        unused = int(np.argmax(rows.mask.any(axis=0))) if rows.count else 0
        if unused:  # columns every remaining row masks out: drop them
            rows.cache.values = {n: v[:, :, unused:] for n, v in rows.cache.host().items()}
            rows.mask = rows.mask[:, unused:]

    def merge(self, rows: Rows, new: Rows) -> bool:
        """Append ``new``'s rows to ``rows`` (left-padding the shorter cache)."""
        a, b = rows.mask.shape[1], new.mask.shape[1]
        rows.cache.pad(max(0, b - a), 0)
        new.cache.pad(max(0, a - b), 0)
        rows.mask = np.pad(rows.mask, ((0, 0), (max(0, b - a), 0)))
        new_mask = np.pad(new.mask, ((0, 0), (max(0, a - b), 0)))
        rows.cache.extend(new.cache)
        rows.mask = np.concatenate([rows.mask, new_mask], axis=0)
        rows.positions = np.concatenate([rows.positions, new.positions])
        return True


class Seq2SeqLM:
    def __init__(self, encoder: OnnxRunner, decoder: OnnxRunner, facts: ModelFacts) -> None:
        self.encoder, self.decoder, self.facts = encoder, decoder, facts
        self.present = [o for o in decoder.output_names if o.startswith("present.")]
        self.self_present = [p for p in self.present if ".decoder." in p]
        self.cross_present = [p for p in self.present if ".encoder." in p]
        self.dtype = decoder.input_types.get(past_name(self.present[0]), np.float32)
        self.hidden_dtype = encoder.output_types.get("last_hidden_state", np.float32)
        self.on_device = frozenset(self.present) if decoder.bind_device else frozenset()
        self.start = facts.decoder_start_token_id
        if self.start is None:
            self.start = facts.pad_token_id

    def prefill(self, prompts: list[list[int]]) -> tuple[Rows, np.ndarray]:
        n, width = len(prompts), max(len(p) for p in prompts)
        ids = np.full((n, width), self.facts.pad_token_id, dtype=np.int64)
        mask = np.zeros((n, width), dtype=np.int64)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = p
            mask[i, : len(p)] = 1
        hidden = self.encoder.run_raw({"input_ids": ids, "attention_mask": mask})[
            "last_hidden_state"
        ]
        f = self.facts
        empty = np.zeros((n, f.num_kv_heads, 0, f.head_dim), dtype=self.dtype)
        feeds: dict[str, Any] = {
            "input_ids": np.full((n, 1), self.start, dtype=np.int64),
            "encoder_attention_mask": mask,
            "encoder_hidden_states": hidden,
            "use_cache_branch": np.zeros(1, dtype=bool),
        }
        feeds.update({past_name(p): empty for p in self.present})
        out = self.decoder.run_raw(feeds, ["logits", *self.present], self.on_device)
        rows = Rows(
            KVCache({past_name(p): out[p] for p in self.self_present}, self.decoder),
            mask,
            cross=KVCache({past_name(p): out[p] for p in self.cross_present}, self.decoder),
        )
        return rows, out["logits"][:, -1].astype(np.float32)

    def step(self, rows: Rows, tokens: np.ndarray) -> np.ndarray:
        n = rows.count
        feeds: dict[str, Any] = {
            "input_ids": tokens[:, None],
            "encoder_attention_mask": rows.mask,
            "encoder_hidden_states": np.zeros((n, 0, self.facts.hidden_size), self.hidden_dtype),
            "use_cache_branch": np.ones(1, dtype=bool),
        }
        feeds.update(rows.cache.values)
        feeds.update(rows.cross.values)
        out = self.decoder.run_raw(feeds, ["logits", *self.self_present], self.on_device)
        rows.cache.values = {past_name(p): out[p] for p in self.self_present}
        return out["logits"][:, -1].astype(np.float32)

    def select(self, rows: Rows, index: np.ndarray) -> None:
        rows.cache.select(index)
        rows.cross.select(index)
        rows.mask = rows.mask[index]

    def merge(self, rows: Rows, new: Rows) -> bool:
        """Append ``new``'s rows when they are at the same decoding step (else False)."""
        if rows.cache.length != new.cache.length:
            return False
        a, b = rows.mask.shape[1], new.mask.shape[1]
        rows.cross.pad(0, max(0, b - a))
        new.cross.pad(0, max(0, a - b))
        rows.mask = np.pad(rows.mask, ((0, 0), (0, max(0, b - a))))
        new_mask = np.pad(new.mask, ((0, 0), (0, max(0, a - b))))
        rows.cache.extend(new.cache)
        rows.cross.extend(new.cross)
        rows.mask = np.concatenate([rows.mask, new_mask], axis=0)
        return True
