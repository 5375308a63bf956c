"""The KV cache of one decoding batch: per-layer key/value tensors (rows x heads x length x dim).

On the CPU they are numpy arrays. On CUDA they are ``OrtValue``s that stay on the GPU between
decoding steps (the decoder's ``present.*`` outputs are bound on the device and fed back as the
next step's ``past_key_values.*``). Changing the set or order of rows (beam reordering, rows
that finish or join) goes through the host: numpy has no access to device memory and the
serving path has no GPU array library, so these (rarer) operations cost one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..session import OnnxRunner


def past_name(present: str) -> str:
    """``present.0.key`` -> ``past_key_values.0.key`` (also ``present.0.decoder.key``)."""
    return "past_key_values" + present[len("present") :]


class KVCache:
    """Named cache tensors of equal row count; ``axis`` 2 is the sequence."""

    def __init__(self, values: dict[str, Any], runner: OnnxRunner) -> None:
        self.values = values
        self.runner = runner

    @classmethod
    def empty(
        cls, names: Sequence[str], rows: int, heads: int, dim: int, dtype: Any, runner: OnnxRunner
    ) -> KVCache:
        zeros = np.zeros((rows, heads, 0, dim), dtype=dtype)
        return cls({n: zeros for n in names}, runner)

    def host(self) -> dict[str, np.ndarray]:
        return {n: (v if isinstance(v, np.ndarray) else v.numpy()) for n, v in self.values.items()}

    def _put(self, values: dict[str, np.ndarray]) -> None:
        self.values = {n: self.runner.to_device(v) for n, v in values.items()}

    @property
    def length(self) -> int:
        any_value = next(iter(self.values.values()))
        shape = any_value.shape if isinstance(any_value, np.ndarray) else any_value.shape()
        return int(shape[2])

    def select(self, index: np.ndarray) -> None:
        """Keep rows ``index`` (in that order; repeats allowed: beam expansion)."""
        self._put({n: np.take(v, index, axis=0) for n, v in self.host().items()})

    def pad(self, before: int, after: int) -> None:
        """Zero-pad the sequence axis (positions the attention mask hides)."""
        if before or after:
            widths = ((0, 0), (0, 0), (before, after), (0, 0))
            self._put({n: np.pad(v, widths) for n, v in self.host().items()})

    def extend(self, other: KVCache) -> None:
        """Append ``other``'s rows (same sequence length)."""
        mine, theirs = self.host(), other.host()
        self._put({n: np.concatenate([v, theirs[n]], axis=0) for n, v in mine.items()})
