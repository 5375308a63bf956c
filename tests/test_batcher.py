"""The dynamic batcher with a fake runner (no model weights): every trigger, cancellation,
failure isolation and back-pressure."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from exasol_mlflow_server.runtime.batcher import Batcher, DirectExecutor, plan_batches
from exasol_mlflow_server.runtime.errors import (
    BadRequest,
    DeadlineExceeded,
    ModelFailure,
    Overloaded,
    ShuttingDown,
)


def seq(n: int, tag: int = 0):
    return (np.full(n, tag, dtype=np.int64), None)


class FakeRunner:
    """Returns (tag, length) per sequence and records every batch it ran."""

    def __init__(self, delay: float = 0.0, fail_on_tag: int | None = None) -> None:
        self.batches: list[list[tuple[int, int]]] = []
        self.delay = delay
        self.fail_on_tag = fail_on_tag
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, seqs):
        self.gate.wait(10)
        batch = [(int(s[0][0]) if len(s[0]) else -1, len(s[0])) for s in seqs]
        self.batches.append(batch)
        if self.fail_on_tag is not None and any(tag == self.fail_on_tag for tag, _ in batch):
            raise RuntimeError("boom")
        time.sleep(self.delay)
        return batch


def test_plan_batches_sorts_and_respects_budget():
    lengths = [5, 50, 3, 40, 4]
    batches = plan_batches(lengths, budget=100)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= 100 or len(b) == 1
    assert batches[0][0] == 2  # shortest first


def test_direct_executor_restores_order():
    runner = FakeRunner()
    out = DirectExecutor(runner, 16).execute([seq(5, 1), seq(2, 2), seq(9, 3)])
    assert out == [(1, 5), (2, 2), (3, 9)]


def test_batcher_returns_each_request_its_rows_in_order():
    runner = FakeRunner()
    b = Batcher(runner, max_batch_tokens=64, max_delay_s=0.002)
    try:
        results = {}

        def client(k):
            seqs = [seq(1 + (k * 7 + i) % 13, tag=k * 100 + i) for i in range(k + 1)]
            results[k] = (b.execute(seqs), seqs)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for got, seqs in results.values():
            assert got == [(int(s[0][0]), len(s[0])) for s in seqs]
        assert b.queued_rows == 0
    finally:
        b.close()


def test_batch_closes_on_token_budget():
    runner = FakeRunner()
    runner.gate.clear()  # hold the first batch so the rest queue up
    b = Batcher(runner, max_batch_tokens=40, max_delay_s=0.0)
    try:
        first = threading.Thread(target=b.execute, args=([seq(10, 0)],))
        first.start()
        time.sleep(0.05)
        rest = threading.Thread(target=b.execute, args=([seq(10, i) for i in range(1, 9)],))
        rest.start()
        time.sleep(0.05)
        runner.gate.set()
        first.join(5)
        rest.join(5)
        sizes = [len(batch) for batch in runner.batches]
        assert sizes[0] == 1 and sizes[1:] == [4, 4]  # 4 rows x 10 tokens = budget 40
    finally:
        b.close()


def test_idle_batcher_waits_max_delay_for_company():
    runner = FakeRunner()
    b = Batcher(runner, max_batch_tokens=10_000, max_delay_s=0.2)
    try:
        threads = [threading.Thread(target=b.execute, args=([seq(3, i)],)) for i in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.01)
        for t in threads:
            t.join(5)
        assert [len(x) for x in runner.batches] == [4]  # all four joined one batch
    finally:
        b.close()


def test_zero_delay_runs_immediately():
    runner = FakeRunner()
    b = Batcher(runner, max_batch_tokens=10_000, max_delay_s=0.0)
    try:
        start = time.perf_counter()
        b.execute([seq(3, 1)])
        assert time.perf_counter() - start < 0.15
    finally:
        b.close()


def test_length_sorting_groups_similar_lengths():
    runner = FakeRunner()
    runner.gate.clear()
    b = Batcher(runner, max_batch_tokens=60, max_delay_s=0.0)
    try:
        t0 = threading.Thread(target=b.execute, args=([seq(1, 0)],))
        t0.start()
        time.sleep(0.05)
        mixed = [seq(n, n) for n in (10, 30, 11, 28, 10, 29)]
        t1 = threading.Thread(target=b.execute, args=(mixed,))
        t1.start()
        time.sleep(0.05)
        runner.gate.set()
        t0.join(5)
        t1.join(5)
        lengths = [sorted(n for _, n in batch) for batch in runner.batches[1:]]
        # oldest first (10), packed with its nearest lengths; then the oldest left (30) with 29
        assert lengths == [[10, 10, 11], [29, 30], [28]]
    finally:
        b.close()


def test_failure_reaches_only_its_requests_and_loop_survives():
    runner = FakeRunner(fail_on_tag=666)
    b = Batcher(runner, max_batch_tokens=10, max_delay_s=0.0)
    try:
        with pytest.raises(ModelFailure):
            b.execute([seq(5, 666)])
        assert b.execute([seq(5, 1)]) == [(1, 5)]
    finally:
        b.close()


def test_timeout_cancels_and_drops_queued_rows():
    runner = FakeRunner()
    runner.gate.clear()
    b = Batcher(runner, max_batch_tokens=10, max_delay_s=0.0)
    try:
        blocker = threading.Thread(target=b.execute, args=([seq(5, 0)],))
        blocker.start()
        time.sleep(0.05)
        with pytest.raises(DeadlineExceeded):
            b.execute([seq(5, 7), seq(5, 8)], deadline=time.monotonic() + 0.1)
        runner.gate.set()
        blocker.join(5)
        assert b.execute([seq(2, 9)]) == [(9, 2)]
        ran_tags = {tag for batch in runner.batches for tag, _ in batch}
        assert 7 not in ran_tags and 8 not in ran_tags  # computed for nobody: never
        assert b.queued_rows == 0
    finally:
        b.close()


def test_queue_full_is_overloaded_and_oversized_request_is_bad():
    runner = FakeRunner()
    runner.gate.clear()
    b = Batcher(runner, max_batch_tokens=5, max_delay_s=0.0, max_queued_rows=4)
    try:
        t = threading.Thread(target=b.execute, args=([seq(5, i) for i in range(4)],))
        t.start()
        time.sleep(0.05)
        # the first row is running; three are queued: one more fits, two do not
        with pytest.raises(Overloaded) as info:
            b.execute([seq(1), seq(1)])
        assert info.value.retry_after >= 1
        with pytest.raises(BadRequest):
            b.execute([seq(1)] * 5)
        runner.gate.set()
        t.join(5)
    finally:
        b.close()


def test_padding_bound_splits_mixed_lengths_past_the_pad_free_size():
    # close lengths share a batch: 20 x 42 padded for 820 real tokens (1.02x)
    assert len(plan_batches([40] * 10 + [42] * 10, budget=4096)) == 1
    # far lengths do not: 40s then 100s would pad 1.43x, so they run as two padding-free batches
    lengths = [40] * 10 + [100] * 10
    split = plan_batches(lengths, budget=4096)
    assert sorted(len(b) for b in split) == [10, 10]
    assert sum(max(lengths[i] for i in b) * len(b) for b in split) == sum(lengths)
    # only a batch under 1/128 of the budget (32 of 4096 tokens) may pad freely
    assert plan_batches([2, 9, 30], budget=4096) == [[0, 1], [2]]


def test_without_a_padding_bound_only_the_budget_splits():
    """CUDA (``padding_bound`` None): mixed lengths share a batch while rows x longest fits."""
    from types import SimpleNamespace

    from exasol_mlflow_server.runtime.batcher import MAX_PADDING, padding_bound

    assert padding_bound(SimpleNamespace(on_cuda=True)) is None
    assert padding_bound(SimpleNamespace(on_cuda=False)) == MAX_PADDING
    lengths = [40] * 10 + [100] * 10
    assert plan_batches(lengths, budget=4096, max_padding=None) == [list(range(20))]
    assert [len(b) for b in plan_batches(lengths, budget=1000, max_padding=None)] == [10, 10]
    runner = FakeRunner()
    out = DirectExecutor(runner, 4096, max_padding=None).execute([seq(5, 1), seq(40, 2)])
    assert out == [(1, 5), (2, 40)] and len(runner.batches) == 1  # 1.78x padding, one run
    bounded = FakeRunner()
    DirectExecutor(bounded, 4096).execute([seq(5, 1), seq(40, 2)])
    assert len(bounded.batches) == 2
    batched = FakeRunner()
    b = Batcher(batched, max_batch_tokens=4096, max_delay_s=0.05, max_padding=None)
    try:
        assert b.execute([seq(n, n) for n in (3, 50, 10, 40)]) == [
            (3, 3),
            (50, 50),
            (10, 10),
            (40, 40),
        ]
        assert len(batched.batches) == 1
    finally:
        b.close()


def test_close_fails_queued_requests_at_once_and_finishes_the_running_batch():
    runner = FakeRunner()
    runner.gate.clear()  # the first batch blocks inside the runner
    b = Batcher(runner, max_batch_tokens=10, max_delay_s=0.0)
    outcomes: dict[str, object] = {}

    def call(name: str, seqs) -> None:
        try:
            outcomes[name] = b.execute(seqs, time.monotonic() + 30)
        except Exception as exc:
            outcomes[name] = exc

    running = threading.Thread(target=call, args=("running", [seq(5, 1)]))
    running.start()
    deadline = time.monotonic() + 5
    while b.queued_rows and time.monotonic() < deadline:  # the scheduler took it
        time.sleep(0.01)
    queued = threading.Thread(target=call, args=("queued", [seq(5, 2), seq(5, 3)]))
    queued.start()
    while b.queued_rows < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    start = time.monotonic()
    closer = threading.Thread(target=b.close)
    closer.start()
    queued.join(5)
    assert isinstance(outcomes["queued"], ShuttingDown)  # at once, not at its 30 s deadline
    assert time.monotonic() - start < 2
    runner.gate.set()
    running.join(5)
    closer.join(5)
    assert outcomes["running"] == [(1, 5)]
    with pytest.raises(ShuttingDown):
        b.execute([seq(1)])


def test_several_schedulers_return_every_request_its_rows_in_order():
    runner = FakeRunner(delay=0.002)
    b = Batcher(runner, max_batch_tokens=12, max_delay_s=0.0, schedulers=2)
    results: dict[int, list] = {}

    def client(c: int) -> None:
        results[c] = b.execute([seq(n, 100 * c + n) for n in (3, 5, 4, 6, 2)])

    try:
        threads = [threading.Thread(target=client, args=(c,)) for c in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        for c in range(6):
            assert results[c] == [(100 * c + n, n) for n in (3, 5, 4, 6, 2)]
        assert len(runner.batches) > 1 and b.queued_rows == 0
    finally:
        b.close()
