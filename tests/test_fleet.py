"""Running as a fleet, with real servers and real clients on loopback: draining shutdown under
never-ending load, the listen backlog on SIGTERM, supervised workers, one scrape for all workers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time

import pytest
import requests
import urllib3
from exasol_mlflow_server.runtime.supervisor import CrashWindow, backoff

from tests.conftest import metric_sum
from tests.serverproc import ServerProcess

ROWS = [f"row {i}: the quick brown fox jumps over the lazy dog" for i in range(100)]


class Client(threading.Thread):
    """A UDF-like client: one kept-alive ``requests.Session`` posting 100-row requests in a loop
    until the server refuses it. Records every outcome."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url + "/invocations"
        self.ok = 0
        self.closing = 0  # responses that said Connection: close
        self.last_close = False
        self.bad: list[str] = []  # a non-200, a reset, a truncated body, ...
        self.refused = False
        self.stop = threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stop.is_set():
                try:
                    r = session.post(self.url, json={"inputs": ROWS}, timeout=60)
                except requests.ConnectionError as exc:
                    reason = getattr(exc.args[0], "reason", None) if exc.args else None
                    if isinstance(reason, urllib3.exceptions.NewConnectionError):
                        self.refused = True  # a clean refusal: no request was sent
                    else:
                        self.bad.append(f"{type(exc).__name__}: {exc}")
                    return
                except requests.RequestException as exc:
                    self.bad.append(f"{type(exc).__name__}: {exc}")
                    return
                if r.status_code != 200 or len(r.json()["predictions"]) != len(ROWS):
                    self.bad.append(f"{r.status_code}: {r.text[:200]}")
                    return
                self.ok += 1
                self.last_close = r.headers.get("Connection", "").lower() == "close"
                self.closing += self.last_close


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def drain_under_load(srv: ServerProcess, drain_timeout: float, clients: int = 6) -> dict:
    """SIGTERM while ``clients`` never stop sending (plus one idle kept-alive session)."""
    load = [Client(srv.url) for _ in range(clients)]
    for client in load:
        client.start()
    idle = requests.Session()
    assert idle.post(srv.url + "/invocations", json={"inputs": ["idle"]}).status_code == 200
    wait_for(lambda: all(c.ok >= 2 for c in load), 120, "every client to get answers")
    before = sum(c.ok for c in load)
    started = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(drain_timeout + 10)
    elapsed = time.monotonic() - started
    for client in load:
        client.join(30)
    idle.close()
    assert code == 0, srv.log()[-3000:]
    assert elapsed < drain_timeout, f"exit after {elapsed:.1f}s\n{srv.log()[-3000:]}"
    for client in load:
        assert not client.bad, (client.bad, srv.log()[-3000:])
        assert client.refused, "the client should be refused once the server is gone"
        assert client.last_close, "the last answer before the refusal said Connection: close"
    assert refused(srv.url)
    return {"elapsed": elapsed, "answered_after_sigterm": sum(c.ok for c in load) - before}


@pytest.fixture(scope="module")
def emb_model(export_dir):
    return export_dir("feature-extraction", "int8")


def test_sigterm_under_never_ending_load_exits_0_without_resets(emb_model):
    srv = ServerProcess(emb_model, "--threads", "1", "--drain-timeout", "20").start()
    try:
        result = drain_under_load(srv, drain_timeout=20)
    finally:
        srv.stop(signal.SIGKILL)
    # the idle kept-alive session is closed after 2 s idle, not at the deadline
    assert result["elapsed"] < 10, result
    assert "drained in" in srv.log()
    print(f"\ndrain: exit {result['elapsed']:.2f}s after SIGTERM, {result}")


def test_the_drain_timeout_bounds_the_exit_even_mid_request(emb_model):
    """A request longer than --drain-timeout does not hold the process: exit 0 at the bound."""
    srv = ServerProcess(emb_model, "--threads", "1", "--drain-timeout", "2").start()
    slow = {"inputs": [" ".join(["slow"] * 250) + f" {i}" for i in range(200)]}
    box: dict = {}

    def call() -> None:
        try:
            box["r"] = requests.post(srv.url + "/invocations", json=slow, timeout=60)
        except requests.RequestException as exc:
            box["error"] = exc

    try:
        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)
        started = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(10) == 0, srv.log()[-3000:]
        elapsed = time.monotonic() - started
        caller.join(30)
        assert elapsed < 2.5, elapsed
        assert "drain timeout: closing 1 connection(s)" in srv.log()
        assert "r" not in box  # cut at the bound (--drain-timeout shorter than the request)
    finally:
        srv.stop(signal.SIGKILL)


def test_connections_in_the_listen_backlog_are_answered_not_reset(emb_model):
    """Connections the kernel accepted while the server could not (SIGSTOP) are served."""
    srv = ServerProcess(emb_model, "--threads", "1", "--drain-timeout", "20").start()
    body = json.dumps({"inputs": ["from the backlog"]}).encode()
    request = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    socks = []
    try:
        os.kill(srv.proc.pid, signal.SIGSTOP)
        for _ in range(8):  # the handshake completes in the kernel; the request waits unread
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            sock.sendall(request)
            socks.append(sock)
        os.kill(srv.proc.pid, signal.SIGTERM)
        os.kill(srv.proc.pid, signal.SIGCONT)
        for sock in socks:
            data = b""
            while chunk := sock.recv(65536):  # ConnectionResetError would fail the test
                data += chunk
            head, _, payload = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), data[:300]
            assert b"connection: close" in head.lower()
            assert len(json.loads(payload)["predictions"]) == 1
        assert srv.proc.wait(30) == 0, srv.log()[-3000:]
        assert refused(srv.url)
    finally:
        for sock in socks:
            sock.close()
        srv.stop(signal.SIGKILL)


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP response with a Content-Length: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed before a response: {data[:200]!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head.lower())[1])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the connection closed mid-response"
        body += chunk
    return head, body


def test_a_next_request_that_has_begun_arriving_is_answered(emb_model):
    """A kept-alive connection whose next request is half sent when the drain starts -- and
    stays half sent past the idle limit -- still gets its answer, with Connection: close."""
    srv = ServerProcess(emb_model, "--threads", "1", "--drain-timeout", "20").start()
    body = json.dumps({"inputs": ["kept alive"]}).encode()
    head = (
        b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
            sock.sendall(head + body)
            first, _ = read_response(sock)
            assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first.lower()
            sock.sendall(head)  # the next request begins ...
            time.sleep(0.3)
            srv.proc.send_signal(signal.SIGTERM)
            time.sleep(3.0)  # ... and stays unfinished past the 2 s idle limit
            sock.sendall(body)
            second, payload = read_response(sock)
            assert second.startswith(b"HTTP/1.1 200") and b"connection: close" in second.lower()
            assert len(json.loads(payload)["predictions"]) == 1
            assert sock.recv(1) == b""  # then the server closes the connection
        assert srv.proc.wait(20) == 0, srv.log()[-3000:]
    finally:
        srv.stop(signal.SIGKILL)


# ---- supervised workers ------------------------------------------------------------------------
def test_backoff_doubles_and_a_crash_loop_is_more_than_the_limit_in_the_window():
    assert [backoff(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert backoff(20) == 30.0
    window = CrashWindow(limit=5, window=60.0)
    for t in range(5):
        window.record(t * 10.0)
    assert not window.looping  # five crashes in 40 s
    assert window.record(45.0) == 6 and window.looping
    spread = CrashWindow(limit=5, window=60.0)
    for t in range(12):  # one crash every 20 s never loops
        assert spread.record(t * 20.0) <= 4 and not spread.looping


def worker_pid(url: str) -> int | None:
    """The PID of the worker that answers a fresh connection (None: it is not ready)."""
    r = requests.get(url + "/metadata", timeout=10)
    return r.json()["pid"] if r.status_code == 200 else None


@pytest.fixture(scope="module")
def two_workers(emb_model):
    srv = ServerProcess(emb_model, "--workers", "2", "--threads", "1", "--drain-timeout", "20")
    srv.start()
    wait_for(lambda: srv.log().count("ready (worker") >= 2, 120, "both workers")
    yield srv
    srv.stop(signal.SIGKILL)


def test_one_scrape_sums_both_workers(two_workers):
    url = two_workers.url
    n = 24
    pids = set()
    for i in range(n):  # fresh connections: the kernel spreads them over both workers
        r = requests.post(url + "/invocations", json={"inputs": [f"count me {i}"]}, timeout=30)
        assert r.status_code == 200
    for _ in range(20):
        pids.add(worker_pid(url))
    assert len(pids) == 2, "both workers answer"
    for _ in range(2):  # whichever worker answers the scrape, it reports every worker
        text = requests.get(url + "/metrics", timeout=10).text
        assert metric_sum(text, "ems_requests_total", route="/invocations", code="200") == n
        assert metric_sum(text, "ems_rows_total") == n
        assert metric_sum(text, "ems_workers") == 2


def test_a_killed_worker_is_replaced(two_workers):
    url = two_workers.url
    victim = worker_pid(url)
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    others: set[int] = set()  # the surviving worker, then its new sibling
    not_ready = []

    def replaced() -> bool:
        try:
            pid = worker_pid(url)
        except requests.RequestException:  # the killed worker's backlog is reset: retry
            return False
        if pid is None:
            not_ready.append(pid)
        elif pid != victim:
            others.add(pid)
        return len(others) == 2

    wait_for(replaced, 10, "a new worker to serve in place of the killed one")
    print(f"\nreplaced a SIGKILLed worker in {time.monotonic() - killed:.1f}s")
    assert not not_ready, "a replacement listens only once its model is warm"
    log = two_workers.log()
    assert re.search(rf"worker \d \(pid {victim}\) was killed by SIGKILL; replacing it", log)
    text = requests.get(url + "/metrics", timeout=10).text
    assert metric_sum(text, "ems_worker_restarts_total") == 1
    assert metric_sum(text, "ems_workers") == 2


def test_supervisor_drains_every_worker_under_load(two_workers):
    result = drain_under_load(two_workers, drain_timeout=20)
    print(f"\nsupervisor drain: {result}")


# ---- several models ------------------------------------------------------------------------------
def parse_serve(argv: list[str], env: dict[str, str] | None = None):
    import argparse

    from exasol_mlflow_server.runtime.settings import add_arguments, from_sources

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return from_sources(parser.parse_args(argv), env or {})


def test_model_specs_from_flags_positional_and_environment():
    from exasol_mlflow_server.runtime.settings import ModelSpec

    specs = parse_serve(["out/minilm/", "--model", "clf=models:/clf@champion", "-m", "runs:/r/m"])
    assert specs.model_specs() == (
        ModelSpec("minilm", "out/minilm/"),  # the positional MODEL is the first (default) model
        ModelSpec("clf", "models:/clf@champion"),
        ModelSpec("m", "runs:/r/m"),
    )
    env = parse_serve([], {"EMS_MODEL": "a=/m/one, models:/reg/3"}).model_specs()
    assert env == (ModelSpec("a", "/m/one"), ModelSpec("reg", "models:/reg/3"))
    assert parse_serve(["/data/x=y"]).model_specs() == (ModelSpec("x-y", "/data/x=y"),)
    with pytest.raises(ValueError, match="two models are named 'same'"):
        parse_serve(["--model", "a/same", "--model", "b/same"]).model_specs()


def test_a_model_that_cannot_load_fails_the_start(export_dir, tmp_path):
    """One good and one broken model: no replica serves a subset (exit 3, before and after
    --workers)."""
    import shutil

    good = export_dir("text-classification", "none")
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx graph")
    for extra in ((), ("--workers", "2")):
        srv = ServerProcess(good, "--model", f"bad={broken}", "--threads", "1", *extra)
        with pytest.raises(RuntimeError, match="exited with 3"):
            srv.start()
        assert "cannot serve bad" in srv.log()


def test_a_crash_loop_stops_the_supervisor_with_exit_1(emb_model):
    """Workers that keep dying (here: SIGKILLed as soon as they start) are a crash loop: more
    than CRASH_LIMIT crashes within the window stop the supervisor, which exits 1."""
    from exasol_mlflow_server.runtime.supervisor import CRASH_LIMIT, EXIT_CRASH_LOOP

    srv = ServerProcess(emb_model, "--workers", "2", "--threads", "1")
    srv.start(wait=False)
    killed: set[int] = set()
    deadline = time.monotonic() + 90
    try:
        while srv.proc.poll() is None and time.monotonic() < deadline:
            for pid in map(int, re.findall(r"started worker \d \(pid (\d+)\)", srv.log())):
                if pid not in killed:
                    killed.add(pid)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            time.sleep(0.05)
        code = srv.proc.wait(10)
    finally:
        srv.stop(signal.SIGKILL)
    log = srv.log()
    assert code == EXIT_CRASH_LOOP, log[-3000:]
    assert "a crash loop; stopping" in log
    assert len(killed) == CRASH_LIMIT + 1, (killed, log[-3000:])
