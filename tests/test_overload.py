"""Overload on a real server (loopback): rejected requests get fast 503s with Retry-After and
the accepted ones keep the model busy, so goodput stays near capacity.

Bounded: one server, about 15 s of load. The bounds are loose on purpose (the machine is
shared); the benchmark's overload cell reports the real ratio.
"""

from __future__ import annotations

import statistics

import pytest
from exasol_mlflow_server.benchmarks import client
from exasol_mlflow_server.benchmarks.rows import generate_rows
from exasol_mlflow_server.benchmarks.workload import Workload

from tests.conftest import exported_model_dir

BATCH, QUEUE = 100, 400  # the queue holds 4 requests
pytestmark = pytest.mark.timeout(240)


def capacity(port: int, w: Workload, offset: int) -> float:
    """rows/s with 2 clients x 2 requests: never more rows than the queue holds."""
    reqs = client.build_requests(w, 4 * BATCH, BATCH)
    reqs = [client.Request(r.body, r.rows) for r in reqs[offset:] + reqs[:offset]]
    load = client.run_load(port, client.split_clients(reqs, 2), 1e9)
    assert load.errors == 0, load.error_samples
    return len(load.ok_rows) / load.wall_s


def test_overload_gets_fast_503s_and_goodput_stays_near_capacity(server_for):
    model = exported_model_dir("text-classification")
    w = Workload.build(generate_rows(800, seed=11), model)
    srv = server_for(
        "text-classification", "--max-queued-rows", str(QUEUE), "--result-cache-mb", "0"
    )
    before = capacity(srv.port, w, 0)
    requests = client.build_requests(w, 12 * BATCH * 10, BATCH)
    load = client.run_load(srv.port, client.split_clients(requests, 12), 5.0, backoff=True)
    after = capacity(srv.port, w, 2)

    assert load.statuses.get("503", 0) >= 5, load.statuses  # 12 clients, room for 4
    assert set(load.statuses) <= {"200", "503"}, load.error_samples
    assert min(load.retry_after_s) >= 1  # every 503 says when to come back
    # rejected by admission (before decoding or tokenizing), never by the full batch queue
    assert all("this request brings" in e for e in load.error_samples), load.error_samples
    rejected = statistics.median(load.busy_latencies_s)
    accepted = statistics.median(load.latencies_s)
    assert rejected < 0.1 * accepted, (rejected, accepted)  # rejected before any work
    goodput = len(load.ok_rows) / load.wall_s
    assert goodput >= 0.7 * statistics.mean([before, after]), (goodput, before, after)
