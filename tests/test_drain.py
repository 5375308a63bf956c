"""Closing the listening socket at a drain resets no connection: the race itself, in seconds.

A real waitress server (``drain.create_server``, a two-line WSGI app) on loopback, clients that
connect, send and read in a tight loop, and a gap between the last ``accept`` and the ``close``
of the listening socket -- the time another thread may hold the GIL under load. Without the drop
filter a connection that completes its handshake in that gap sits in the backlog and is reset
when the socket closes (the control, so the test can fail); with it the handshake never
completes and the client is refused a second later instead.
"""

from __future__ import annotations

import errno
import select
import socket
import sys
import threading
import time
from collections import Counter

import pytest
from exasol_mlflow_server.runtime import drain
from exasol_mlflow_server.runtime.server import make_socket

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket filter")

GAP_S = 0.3
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def hammer_while_closing(monkeypatch: pytest.MonkeyPatch, filtered: bool) -> Counter:
    sock = make_socket("127.0.0.1", 0, reuse_port=False)
    port = sock.getsockname()[1]
    server = drain.create_server(app, sock, threads=2)
    loop = threading.Thread(target=server.run, daemon=True)
    loop.start()
    seen: Counter = Counter()
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                conn = socket.create_connection(("127.0.0.1", port), timeout=4)
            except ConnectionRefusedError:
                seen["refused"] += 1
                time.sleep(0.01)
                continue
            except OSError:
                seen["connect timeout"] += 1
                continue
            try:
                conn.sendall(REQUEST)
                seen["ok" if conn.recv(64).startswith(b"HTTP/1.1 200") else "empty"] += 1
            except ConnectionResetError:
                seen["reset"] += 1
            except OSError:
                seen["read timeout"] += 1
            finally:
                conn.close()

    clients = [threading.Thread(target=client, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    deadline = time.monotonic() + 10
    while seen["ok"] < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert seen["ok"] >= 20, seen

    accept, probes = server.accept, []

    def accept_with_gap():  # the last accept finds the backlog empty; then the GIL is elsewhere
        pair = accept()
        if pair is None and not probes:
            for _ in range(3):  # connections that arrive in the gap, for certain
                probe = socket.socket()
                probe.setblocking(False)
                probe.connect_ex(("127.0.0.1", port))
                probes.append(probe)
            time.sleep(GAP_S)
        return pair

    server.accept = accept_with_gap
    if not filtered:
        monkeypatch.setattr(drain, "refuse_handshakes", lambda sock: False)
    server.trigger.pull_trigger(lambda: drain.accept_backlog_and_close(server))
    time.sleep(GAP_S + 0.2)
    for probe in probes:
        seen["probe " + probe_outcome(probe)] += 1
        probe.close()
    time.sleep(0.6)  # past the clients' SYN retry (1 s): they are refused by now
    stop.set()
    for thread in clients:
        thread.join(6)
    drain.stop_now(server)
    loop.join(5)
    monkeypatch.undo()
    return seen


def probe_outcome(sock: socket.socket) -> str:
    """What became of a non-blocking connect: refused, or connected and then reset (or served)."""
    _, writable, _ = select.select([], [sock], [], 4)
    if not writable:
        return "pending"
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        named = {errno.ECONNREFUSED: "refused", errno.ECONNRESET: "reset"}
        return named.get(err, errno.errorcode.get(err, str(err)))
    sock.setblocking(True)
    sock.settimeout(4)
    try:
        sock.sendall(REQUEST)
        data = sock.recv(64)
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    return "ok" if data.startswith(b"HTTP/1.1 200") else "empty"


def test_closing_the_listener_under_connect_storm_resets_nothing(monkeypatch):
    control = hammer_while_closing(monkeypatch, filtered=False)
    assert control["probe reset"] == 3, f"control: without the filter the gap resets ({control})"
    seen = hammer_while_closing(monkeypatch, filtered=True)
    assert seen["probe refused"] == 3, seen  # they never got in: refused once the socket closed
    assert seen["reset"] == 0 and seen["empty"] == 0, seen
    assert seen["refused"] > 0, seen  # the server is gone, and says so cleanly
