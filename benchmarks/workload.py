"""The workload of one run: the rows, their token counts, their ideal FLOPs, and the cell plan.

FLOPs per sequence of S tokens (docs: performance reference §6, each FMA = 2 FLOP)::

    FLOPs(S) = L * (8*S*H^2 + 4*S*H*I + 4*S^2*H)      (= L*(24*S*H^2 + 4*S^2*H) when I = 4H)

with L layers, hidden size H and FFN size I read from the model's ``config.json``. A client
cannot see the padded batch the server ran, so every system is credited with the FLOPs of the
rows' *own* token counts (ideal FLOPs, no padding): padding shows up as lower efficiency.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int

    @classmethod
    def from_config(cls, model_dir: Path) -> ModelShape:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        layers = int(config.get("num_hidden_layers") or config.get("n_layers"))
        hidden = int(config.get("hidden_size") or config.get("dim"))
        inter = int(config.get("intermediate_size") or config.get("hidden_dim") or 4 * hidden)
        return cls(layers, hidden, inter)

    def flops(self, tokens: np.ndarray | int) -> np.ndarray:
        """Forward-pass FLOPs of one sequence of ``tokens`` tokens (vectorised)."""
        s = np.asarray(tokens, dtype=np.float64)
        h, i = float(self.hidden), float(self.intermediate)
        return self.layers * (8.0 * s * h * h + 4.0 * s * h * i + 4.0 * s * s * h)


@dataclass
class Workload:
    """The benchmark rows with per-row token counts and ideal FLOPs (same order as ``texts``).

    The rows are put in :func:`balanced_order`, so any prefix is a fair sample of lengths.
    """

    texts: list[str]
    categories: list[str]
    tokens: np.ndarray
    flops: np.ndarray
    shape: ModelShape
    max_length: int

    @classmethod
    def build(
        cls, rows: list[tuple[str, str]], model_dir: Path, max_length: int | None = None
    ) -> Workload:
        """Count tokens with the exported model's own tokenizer, truncated as the server does."""
        from tokenizers import Tokenizer

        manifest = json.loads((Path(model_dir) / "exasol_model.json").read_text(encoding="utf-8"))
        max_len = int(max_length or manifest.get("max_length") or 512)
        tok = Tokenizer.from_file(str(Path(model_dir) / manifest["tokenizer_file"]))
        tok.no_padding()
        tok.enable_truncation(max_len)
        texts = [text for _, text in rows]
        tokens = np.array([len(e.ids) for e in tok.encode_batch(texts)], dtype=np.int64)
        order = balanced_order(tokens)
        rows = [rows[i] for i in order]
        tokens = tokens[order]
        shape = ModelShape.from_config(model_dir)
        return cls(
            [t for _, t in rows], [c for c, _ in rows], tokens, shape.flops(tokens), shape, max_len
        )

    def __len__(self) -> int:
        return len(self.texts)

    def summary(self) -> dict:
        t = self.tokens
        cats: dict[str, int] = {}
        for c in self.categories:
            cats[c] = cats.get(c, 0) + 1
        return {
            "rows": len(self),
            "categories": cats,
            "tokens": {
                "mean": round(float(t.mean()), 1),
                "p50": int(np.percentile(t, 50)),
                "p90": int(np.percentile(t, 90)),
                "p99": int(np.percentile(t, 99)),
                "max": int(t.max()),
                "total": int(t.sum()),
            },
            "max_length": self.max_length,
            "model_shape": {
                "layers": self.shape.layers,
                "hidden": self.shape.hidden,
                "intermediate": self.shape.intermediate,
            },
            "gflop_per_row_mean": round(float(self.flops.mean()) / 1e9, 3),
        }

    def indices(self, start: int, count: int) -> list[int]:
        """``count`` row indices from ``start``, wrapping around the pool."""
        n = len(self)
        return [(start + k) % n for k in range(count)]


def balanced_order(tokens: np.ndarray) -> list[int]:
    """A permutation whose every prefix has about the length mix of the whole pool.

    Cells are capped in time, so a slow cell runs fewer rows than a fast one; with this order
    both ran a fair sample (not, say, the short rows only). The rows are ranked by length and
    visited in bit-reversed rank order (a van der Corput sequence over the quantiles).
    """
    n = len(tokens)
    ranked = np.argsort(tokens, kind="stable")
    bits = max(1, (n - 1).bit_length())
    picks = [int(format(k, f"0{bits}b")[::-1], 2) for k in range(1 << bits)]
    return [int(ranked[p]) for p in picks if p < n]


@dataclass(frozen=True)
class Budget:
    """How much work one cell may do (see :func:`plan_cell`)."""

    max_rows: int  # rows per cell when they fit in the time cap
    time_cap_s: float  # clients start no new request after this
    max_cell_s: float  # skip a cell whose smallest possible run (one request per client) is longer


def plan_cell(
    batch: int, clients: int, budget: Budget, rows_per_s: float | None
) -> tuple[int, str]:
    """Rows for a (batch, clients) cell, or 0 and the reason it is skipped.

    A cell sends whole requests of ``batch`` rows, at least one per client, so it needs at least
    ``batch * clients`` rows. It gets ``max_rows`` (rounded up to whole requests per client)
    unless the estimated rate says that even one round would take longer than ``max_cell_s``.
    """
    minimum = batch * clients
    if rows_per_s and minimum / rows_per_s > budget.max_cell_s:
        return 0, (
            f"skipped: one round is {minimum} rows, about {minimum / rows_per_s:.0f} s at the "
            f"estimated {rows_per_s:.0f} rows/s (cell limit {budget.max_cell_s:.0f} s)"
        )
    per_client = math.ceil(max(budget.max_rows, minimum) / clients / batch) * batch
    return per_client * clients, ""
