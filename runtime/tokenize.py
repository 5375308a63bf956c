"""[tokenize] texts -> token id sequences, and [collate] sequences -> padded model feeds.

Uses the Rust `tokenizers` library on the exported ``tokenizer.json``. The fixed padding that
many ``tokenizer.json`` files carry (often to 128 tokens) is switched off: a batch is padded
only to its own longest row, in :func:`collate`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

# One tokenized sequence as the batcher sees it: (input_ids, token_type_ids or None).
Seq = tuple[np.ndarray, np.ndarray | None]


class TextTokenizer:
    def __init__(self, path: Path, max_length: int, pad_id: int = 0) -> None:
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_padding()
        self.max_length = max_length
        self.pad_id = pad_id
        self._truncation: tuple[int, int, str] | None = None
        self.set_truncation(max_length)
        self._variants: OrderedDict[tuple[int, int, str], Tokenizer] = OrderedDict()
        self._variants_lock = threading.Lock()

    @property
    def raw(self) -> Tokenizer:
        return self._tok

    def set_truncation(
        self, max_length: int, stride: int = 0, strategy: str = "longest_first"
    ) -> None:
        key = (max_length, stride, strategy)
        if key != self._truncation:
            self._tok.enable_truncation(max_length, stride=stride, strategy=strategy)
            self._truncation = key

    def encode(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> list[Encoding]:
        self.set_truncation(self.max_length)
        if pairs is None:
            return self._tok.encode_batch(list(texts))
        return self._tok.encode_batch(list(zip(texts, pairs, strict=True)))

    def truncating(
        self, max_length: int, stride: int = 0, strategy: str = "longest_first"
    ) -> Tokenizer:
        """A private copy of the tokenizer with its own truncation (stride, strategy).

        The copy is never reconfigured, so request threads may use it concurrently (``encode``
        re-sets the shared tokenizer's truncation, so other settings must not go through it).
        Its ``Encoding.overflowing`` holds the extra windows when a text is split.
        A few copies are cached (least recently used first out).
        """
        key = (max_length, stride, strategy)
        with self._variants_lock:
            tok = self._variants.get(key)
            if tok is not None:
                self._variants.move_to_end(key)
                return tok
        tok = Tokenizer.from_str(self._tok.to_str())
        tok.no_padding()
        tok.enable_truncation(max_length, stride=stride, strategy=strategy)
        with self._variants_lock:
            self._variants[key] = tok
            while len(self._variants) > 8:
                self._variants.popitem(last=False)
        return tok

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids))


def to_seq(enc: Encoding) -> Seq:
    ids = np.asarray(enc.ids, dtype=np.int64)
    type_ids = np.asarray(enc.type_ids, dtype=np.int64) if any(enc.type_ids) else None
    return ids, type_ids


# ONNX Runtime's CUDA provider pays for every input shape it has not seen yet: measured on an
# H200 (fp16 MiniLM, onnxruntime-gpu 1.31), a new (rows, tokens) shape took 53-57 ms and a seen
# one 3-5 ms, with either arena strategy and with eager CUDA module loading. Padding each CUDA
# micro-batch to a bucket -- rows to a power of two, tokens to a multiple of 32 -- keeps the
# shapes to a small set that is paid once each (24 random shapes -> 15 buckets: 5.2 ms a run).
SEQ_BUCKET = 32


def bucket_shape(rows: int, width: int, max_width: int) -> tuple[int, int]:
    """``(rows, width)`` rounded up to a power of two and to a multiple of :data:`SEQ_BUCKET`
    (never past ``max_width``, the model's longest input, unless ``width`` itself is)."""
    padded_rows = 1 << max(0, rows - 1).bit_length()
    padded_width = -(-width // SEQ_BUCKET) * SEQ_BUCKET
    return padded_rows, max(width, min(padded_width, max_width))


def collate(
    seqs: Sequence[Seq], pad_id: int, bucket_width: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pad to the longest sequence: (input_ids, attention_mask, token_type_ids, lengths).

    ``bucket_width`` (the model's longest input; 0: off): pad the batch to :func:`bucket_shape`;
    the extra rows are one pad token each, and ``lengths`` covers the real rows only.
    """
    lengths = np.fromiter((len(s[0]) for s in seqs), dtype=np.int64, count=len(seqs))
    rows, width = len(seqs), int(lengths.max()) if len(seqs) else 0
    if bucket_width and rows:
        rows, width = bucket_shape(rows, width, bucket_width)
    ids = np.full((rows, width), pad_id, dtype=np.int64)
    types = np.zeros((rows, width), dtype=np.int64)
    for row, (seq_ids, seq_types) in enumerate(seqs):
        ids[row, : len(seq_ids)] = seq_ids
        if seq_types is not None:
            types[row, : len(seq_types)] = seq_types
    all_lengths = np.ones(rows, dtype=np.int64)
    all_lengths[: len(seqs)] = lengths
    mask = (np.arange(width)[None, :] < all_lengths[:, None]).astype(np.int64)
    return ids, mask, types, lengths
