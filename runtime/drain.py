"""Draining shutdown of the waitress server: SIGTERM/SIGINT -> exit 0 within ``--drain-timeout``.

On the signal, in the event-loop thread (through waitress's trigger, never inside the handler):

1. **Stop accepting without resets.** The kernel resets whatever is still queued when a
   listening socket closes, so first a socket filter that drops every packet is attached to the
   listening socket (Linux: new handshakes stop in the kernel, whatever thread holds the GIL;
   their clients retry the SYN a second later and are refused, or with ``--workers`` and
   SO_REUSEPORT sent to a worker still listening), then the connections already in the backlog
   are accepted, then the listening socket is closed: new connections are refused from then on.
   Without the filter, a connection that arrived between the last accept and the close -- a gap
   as long as another thread keeps the GIL, milliseconds under load -- was reset.
2. **Finish what was accepted.** Requests in flight, queued in waitress, or arriving on an open
   connection keep being served; every response from now on says ``Connection: close`` and its
   connection closes once the response is flushed.
3. **Close idle kept-alive connections** -- but only those idle for ``IDLE_CLOSE_S`` with nothing
   unread: a client that keeps sending gets ``Connection: close`` on its next response instead,
   so no request that has begun to arrive is cut. (HTTP/1.1 cannot close an idle connection
   without a race against a request the client sends at that very moment; waiting for an idle
   gap makes that race unlikely, and an HTTP client retries a request on a closed idle connection
   only when it had not sent it.)
4. When no connection is left, the loop ends. At the deadline (``--drain-timeout`` minus a small
   margin for the shutdown itself) whatever is left is closed and the process exits anyway.

A second signal stops at once.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.task import WSGITask

log = logging.getLogger("exasol_mlflow_server")

IDLE_CLOSE_S = 2.0  # a kept-alive connection idle this long (and nothing unread) is closed
TICK_S = 0.05


class DrainingTask(WSGITask):
    """A WSGI task that answers ``Connection: close`` once the server drains."""

    def build_response_header(self) -> bytes:
        channel = self.channel
        if getattr(channel.server, "draining", False) and not _more_requests(channel):
            self.set_close_on_finish()  # adds "Connection: close" while no header is written
        return super().build_response_header()


class DrainingChannel(HTTPChannel):
    task_class = DrainingTask


def _more_requests(channel: HTTPChannel) -> bool:
    """Has a further (pipelined) request begun to arrive behind the one being answered?"""
    return len(channel.requests) > 1 or channel.request is not None


def create_server(app: Any, sock: socket.socket, listen: bool = True, **adjustments: Any) -> Any:
    """A waitress server on ``sock`` whose channels know how to drain.

    ``listen=False``: the socket stays bound but closed to connections until :func:`listen`.
    """
    server = waitress.create_server(app, sockets=[sock], _start=listen, **adjustments)
    server.channel_class = DrainingChannel
    server.draining = False
    return server


def listen(server: Any) -> None:
    """Start accepting connections (from any thread), unless the server drains already."""

    def start() -> None:
        if not server.draining and server.socket is not None:
            server.accept_connections()

    server.trigger.pull_trigger(start)


def stop_now(server: Any) -> None:
    """End the event loop at once (from any thread): every connection is closed."""
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))


SO_ATTACH_FILTER = 26  # Linux <asm-generic/socket.h>
DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # classic BPF: BPF_RET | BPF_K, k=0 (keep 0 bytes)


def refuse_handshakes(sock: socket.socket) -> bool:
    """Make the kernel drop every packet to listening ``sock`` (a classic BPF filter), so that no
    new connection completes its handshake into the backlog; established ones are unaffected
    (they are sockets of their own). False where this is not Linux or the kernel refuses."""
    if not sys.platform.startswith("linux"):
        return False
    program = ctypes.create_string_buffer(DROP_ALL, len(DROP_ALL))
    fprog = struct.pack("HL", 1, ctypes.addressof(program))  # struct sock_fprog {len, *filter}
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    except OSError as exc:
        log.debug("cannot attach the drop filter to the listening socket: %s", exc)
        return False
    return True


def accept_backlog_and_close(server: Any) -> int:
    """Accept every connection queued on ``server``'s listening socket, then close it (in the
    event-loop thread; see step 1 of the module docstring). Returns how many were accepted."""
    refuse_handshakes(server.socket)
    accepted = 0
    while True:
        try:
            pair = server.accept()
        except OSError as exc:  # e.g. out of file descriptors: the rest cannot be helped
            log.warning("cannot accept the rest of the listen backlog: %s", exc)
            break
        if pair is None:
            break
        conn, addr = pair
        server.set_socket_options(conn)
        server.channel_class(server, conn, server.fix_addr(addr), server.adj, map=server._map)
        accepted += 1
    wasyncore.dispatcher.close(server)  # the listening socket (not the trigger)
    return accepted


def _has_unread(channel: HTTPChannel) -> bool:
    try:
        return bool(channel.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False  # reset or closed: nothing to answer


def _idle(channel: HTTPChannel) -> bool:
    return not (
        channel.requests
        or channel.request is not None
        or channel.total_outbufs_len
        or channel.will_close
        or channel.close_when_flushed
    )


class Drainer:
    """The SIGTERM/SIGINT handler of one waitress server (see the module docstring)."""

    def __init__(
        self,
        server: Any,
        timeout: float,
        on_begin: Callable[[], None] = lambda: None,
        idle_close: float = IDLE_CLOSE_S,
    ) -> None:
        self.server, self.timeout, self.on_begin = server, timeout, on_begin
        self.idle_close = min(idle_close, timeout / 4)
        self.started: float | None = None

    def remaining(self, default: float) -> float:
        """Seconds left until the drain deadline (``default`` when not draining)."""
        if self.started is None:
            return default
        return max(0.0, self.started + self.timeout - time.monotonic())

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)

    def handle(self, signum: int, frame: Any) -> None:
        if self.started is not None:  # a second signal: stop now
            raise SystemExit(0)
        self.started = time.monotonic()
        log.info(
            "received %s: draining (stop accepting, finish requests, close connections; at most "
            "%gs)",
            signal.Signals(signum).name,
            self.timeout,
        )
        # Sockets are touched only by the loop thread; a helper thread asks it through the
        # trigger (taking the trigger's lock inside a signal handler could deadlock).
        threading.Thread(target=self.run, name="drain", daemon=True).start()

    # ---- the drain thread -------------------------------------------------------------------
    def run(self) -> None:
        started = self.started if self.started is not None else time.monotonic()
        margin = min(1.0, self.timeout * 0.1)
        deadline = started + max(0.0, self.timeout - margin)
        self.on_begin()
        accepted = self._in_loop(self._stop_accepting, default=0)
        if accepted:
            log.info(
                "accepted %d connection(s) from the listen backlog before closing it", accepted
            )
        while not self._in_loop(self._close_idle, default=True):
            if time.monotonic() >= deadline:
                log.warning(
                    "drain timeout: closing %d connection(s) still open after %.1fs",
                    len(self.server.active_channels),
                    time.monotonic() - started,
                )
                break
            time.sleep(TICK_S)
        else:
            log.info("drained in %.2fs", time.monotonic() - started)
        self._in_loop(self._close_all)

    def _close_all(self) -> None:
        for channel in list(self.server.active_channels.values()):
            channel.handle_close()  # also wakes task threads waiting to write
        wasyncore.close_all(self.server._map)  # the trigger too: the loop ends

    def _in_loop(self, fn: Callable[[], Any], default: Any = None, wait: float = 2.0) -> Any:
        """Run ``fn`` in the event-loop thread; its result, or ``default`` when it did not run."""
        future: Future = Future()

        def thunk() -> None:
            try:
                future.set_result(fn())
            except Exception as exc:
                future.set_exception(exc)

        try:
            self.server.trigger.pull_trigger(thunk)
            return future.result(wait)
        except Exception:  # the loop is gone (already closed) or stuck: nothing left to do here
            log.debug("drain step %s did not run", getattr(fn, "__name__", fn), exc_info=True)
            return default

    def _stop_accepting(self) -> int:
        server = self.server
        server.draining = True
        if server.socket is None:
            return 0
        if not server.accepting:  # not listening yet: nothing can be in a backlog
            wasyncore.dispatcher.close(server)
            return 0
        return accept_backlog_and_close(server)

    def _close_idle(self) -> bool:
        """Close connections idle long enough; True when none is left."""
        now = time.time()
        for channel in list(self.server.active_channels.values()):
            if (
                _idle(channel)
                and now - channel.last_activity >= self.idle_close
                and not _has_unread(channel)
            ):
                channel.handle_close()
        return not self.server.active_channels
