"""Compute each distinct input once: in-request deduplication and a bounded result cache.

SQL columns repeat themselves (status texts, product names, templated messages). A request's
rows are keyed by their inputs (every column the task reads, list columns included); identical
rows are tokenized and run once and fanned back out in input order (:func:`distinct_rows`).

Across requests, :class:`ResultCache` keeps each row's post-processed prediction, keyed by the
task params and the row, LRU, bounded in bytes (``--result-cache-mb``; 0 turns it off). One cache
belongs to one pipeline, i.e. one model version: a new version gets a new pipeline and so an
empty cache, and no request can get another version's answer. It is thread-safe (one lock,
taken once per request for the lookups and once for the stores).

With fp32 a cached answer is the answer the model gives. Dynamic int8 computes one activation
scale per batch tensor, so a row's int8 result depends slightly on its batch-mates; with the
cache each distinct text gets one stable answer (the first one computed).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

ENTRY_OVERHEAD = 200  # bytes per entry beyond its value: key, dict slot, list node (estimated)


def row_keys(columns: dict[str, list[Any]]) -> list[tuple[Hashable, ...]]:
    """One hashable key per row: its value in every column (lists become tuples)."""
    names = sorted(columns)
    return [
        tuple(tuple(v) if isinstance(v, list) else v for v in values)
        for values in zip(*(columns[n] for n in names), strict=True)
    ]


def distinct_rows(keys: Sequence[Hashable]) -> tuple[list[int], list[int]]:
    """``(first, inverse)``: the request row where each distinct row first occurs (in order),
    and for every request row the distinct row it is (``inverse[i]``)."""
    slot_of: dict[Hashable, int] = {}
    rows: list[int] = []
    inverse: list[int] = []
    for row, key in enumerate(keys):
        slot = slot_of.get(key)
        if slot is None:
            slot = slot_of[key] = len(rows)
            rows.append(row)
        inverse.append(slot)
    return rows, inverse


def size_of(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes + ENTRY_OVERHEAD
    if isinstance(value, str):
        return sys.getsizeof(value) + ENTRY_OVERHEAD
    return len(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)) * 2 + ENTRY_OVERHEAD


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    entries: int = 0
    bytes: int = 0
    capacity_bytes: int = 0


class ResultCache:
    """LRU of ``(params key, row key) -> prediction``, bounded by ``max_bytes`` (0 = off)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max(0, int(max_bytes))
        self._entries: OrderedDict[tuple[bytes, Hashable], tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._stats = CacheStats(capacity_bytes=self.max_bytes)

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def params_key(self, params: dict[str, Any]) -> bytes:
        if not self.enabled:
            return b""
        return orjson.dumps(params, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY)

    def get_many(self, pkey: bytes, keys: Sequence[Hashable]) -> list[Any]:
        """The cached prediction per key, or :data:`MISSING`; counts hits and misses."""
        if not self.enabled:
            return [MISSING] * len(keys)
        out: list[Any] = []
        with self._lock:
            for key in keys:
                hit = self._entries.get((pkey, key))
                if hit is None:
                    out.append(MISSING)
                    continue
                self._entries.move_to_end((pkey, key))
                out.append(hit[0])
            found = sum(1 for v in out if v is not MISSING)
            self._stats.hits += found
            self._stats.misses += len(out) - found
        return out

    def put_many(self, pkey: bytes, items: Sequence[tuple[Hashable, Any]]) -> None:
        if not self.enabled:
            return
        sized = [(key, value, size_of(value)) for key, value in items]  # outside the lock
        with self._lock:
            for key, value, size in sized:
                if size > self.max_bytes:
                    continue  # larger than the whole cache: never kept
                old = self._entries.pop((pkey, key), None)
                if old is not None:
                    self._stats.bytes -= old[1]
                self._entries[(pkey, key)] = (value, size)
                self._stats.bytes += size
            while self._stats.bytes > self.max_bytes and self._entries:
                _, (_, size) = self._entries.popitem(last=False)
                self._stats.bytes -= size
                self._stats.evictions += 1
            self._stats.entries = len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._stats.bytes = self._stats.entries = 0

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(**vars(self._stats))


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
