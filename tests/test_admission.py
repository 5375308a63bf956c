"""Admission before work (runtime/admission.py): the bound, both steps, release, threads, and
that a rejected request is never decoded or tokenized by the pipeline."""

from __future__ import annotations

import threading

import orjson
import pytest
from exasol_mlflow_server.runtime.admission import Admission
from exasol_mlflow_server.runtime.errors import BadRequest, Overloaded


def body(rows: int, text: str = "a short row of text") -> bytes:
    return orjson.dumps({"inputs": [text] * rows})


def test_an_idle_server_admits_and_learns_bytes_per_row():
    adm = Admission(max_rows=100)
    assert adm.estimate(10_000) == 0  # nothing decoded yet: no estimate
    data = body(50)
    with adm.admit(len(data)) as ticket:
        assert adm.held_rows == 0
        ticket.settle(50)
        assert adm.held_rows == 50
    assert adm.held_rows == 0
    assert adm.bytes_per_row == pytest.approx(len(data) / 50)
    assert adm.estimate(len(body(80))) == pytest.approx(80, abs=2)


def test_step_one_rejects_by_the_estimate_before_anything_is_decoded():
    adm = Admission(max_rows=100, retry_after=3)
    with adm.admit(len(body(10))) as first:
        first.settle(10)
        held = adm.admit(len(body(60)))
        assert 65 <= adm.held_rows <= 75  # 10 settled + about 60 estimated
        with pytest.raises(Overloaded) as err:
            adm.admit(len(body(40)))  # about 40 more do not fit in 100
        assert err.value.retry_after == 3 and "--max-queued-rows" in err.value.message
        assert adm.rejected == 1
        held.release()
        adm.admit(len(body(40))).release()  # fits again
    assert adm.held_rows == 0


def test_step_two_is_exact_and_a_rejected_ticket_holds_nothing():
    adm = Admission(max_rows=100)
    with adm.admit(len(body(10))) as a:
        a.settle(10)
        short = b'{"inputs": ["x"]}'  # tiny body, estimated as one row
        b = adm.admit(len(short))
        with pytest.raises(Overloaded):
            b.settle(95)  # but it really has 95 rows: 10 + 95 > 100
        assert adm.held_rows == 10
        b.release()  # releasing twice is harmless
        assert adm.held_rows == 10


def test_a_request_larger_than_the_bound_is_a_bad_request_even_when_idle():
    adm = Admission(max_rows=100)
    ticket = adm.admit(len(body(500)))
    with pytest.raises(BadRequest, match="split it"):
        ticket.settle(500)
    assert adm.held_rows == 0


def test_an_idle_server_admits_a_large_estimate_and_checks_it_exactly():
    adm = Admission(max_rows=100)
    with adm.admit(len(body(10))) as t:
        t.settle(10)  # learn bytes per row
    with adm.admit(len(body(300))) as big:  # estimated 300 > 100, but nothing is held
        big.settle(90)  # it had long rows: 90 fit
        assert adm.held_rows == 90


def test_the_bound_holds_under_concurrent_admission():
    adm = Admission(max_rows=50)
    with adm.admit(len(body(5))) as t:
        t.settle(5)
    peak, lock, ok, rejected = [0], threading.Lock(), [0], [0]
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait()
        for _ in range(200):
            try:
                with adm.admit(len(body(5))) as ticket:
                    ticket.settle(5)
                    with lock:
                        peak[0] = max(peak[0], adm.held_rows)
                        ok[0] += 1
            except Overloaded:
                with lock:
                    rejected[0] += 1

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ok[0] + rejected[0] == 16 * 200 and ok[0] > 0
    assert peak[0] <= 50
    assert adm.held_rows == 0


def test_the_pipeline_settles_before_tokenizing(monkeypatch):
    """A request rejected at step 2 never reaches the tokenizer."""
    from exasol_mlflow_server.runtime import pipeline as pipeline_mod

    class Task:
        def list_columns(self):
            return frozenset()

        def select(self, payload):
            raise AssertionError("selected/tokenized a rejected request")

    pipe = pipeline_mod.Pipeline.__new__(pipeline_mod.Pipeline)
    pipe.task = Task()
    adm = Admission(max_rows=10)
    with adm.admit(len(body(8))) as holder:
        holder.settle(8)
        ticket = adm.admit(len(b'{"inputs": ["x"]}'))  # estimated at 1 row: passes step 1
        with pytest.raises(Overloaded):
            pipe.invoke(body(5), "application/json", ticket=ticket)
        ticket.release()
    assert adm.held_rows == 0
