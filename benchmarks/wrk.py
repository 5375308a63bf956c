"""A C load generator for the small-batch cells: ``wrk`` with a Lua script cycling prepared bodies.

At batch 1 a Python client thread costs about as much CPU per request as the server does, so on
a small machine it would measure itself. ``wrk`` (a C, epoll-based HTTP benchmark; Debian/Ubuntu
``apt-get install -y wrk``, macOS ``brew install wrk``) keeps N kept-alive connections, each with
one request in flight -- N UDF instances -- and cycles through the cell's request bodies, which
are written to a file before the clock starts. The Lua script counts the responses by status;
the cell's rows are ``200 responses x rows per body`` (every body of a cell has B rows).

wrk runs for a fixed time and drops the requests still in flight at the end, so it is used where
a request takes milliseconds (small batches): there the loss is negligible. Its CPU time
(``os.wait4`` rusage) is reported as the client's share of the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = "install wrk for the small-batch cells (Debian/Ubuntu: apt-get install -y wrk)"

LUA = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end

function init(args)
  local file, path, ctype, offset = args[1], args[2], args[3], tonumber(args[4] or "0")
  reqs = {}
  for line in io.lines(file) do
    reqs[#reqs + 1] = wrk.format("POST", path, {["Content-Type"] = ctype}, line)
  end
  idx = offset % #reqs
  n200, n503, nother = 0, 0, 0
end

function request()
  idx = idx % #reqs + 1
  return reqs[idx]
end

function response(status, headers, body)
  if status == 200 then n200 = n200 + 1
  elseif status == 503 then n503 = n503 + 1
  else nother = nother + 1 end
end

function done(summary, latency, requests)
  local ok, busy, other = 0, 0, 0
  for _, t in ipairs(threads) do
    ok = ok + t:get("n200"); busy = busy + t:get("n503"); other = other + t:get("nother")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"duration_us": %d, "requests": %d, "ok": %d, "busy": %d, "other": %d, '
    .. '"socket_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.duration, summary.requests, ok, busy, other,
    e.connect + e.read + e.write, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_binary() -> str | None:
    return shutil.which("wrk")


@dataclass
class WrkResult:
    seconds: float
    ok: int
    busy: int  # 503s
    other: int  # other statuses
    socket_errors: int
    timeouts: int
    p50_ms: float
    p99_ms: float
    client_cpu_s: float

    @property
    def requests(self) -> int:
        return self.ok + self.busy + self.other

    @property
    def statuses(self) -> dict[str, int]:
        out = {"200": self.ok, "503": self.busy, "other": self.other}
        if self.socket_errors or self.timeouts:
            out["socket_errors"], out["timeouts"] = self.socket_errors, self.timeouts
        return {k: v for k, v in out.items() if v}


def run_wrk(
    port: int,
    bodies: list[bytes],
    connections: int,
    seconds: float,
    path: str = "/invocations",
    content_type: str = "application/json",
    timeout_s: float = 60.0,
) -> WrkResult:
    """``connections`` kept-alive connections posting ``bodies`` in turn for ``seconds``."""
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError(f"wrk is not installed: {INSTALL_HINT}")
    if any(b"\n" in body for body in bodies):
        raise ValueError("wrk bodies are read one per line: a body must not contain a newline")
    with tempfile.TemporaryDirectory(prefix="ems-wrk-") as tmp:
        script, data, out = Path(tmp) / "cycle.lua", Path(tmp) / "bodies", Path(tmp) / "out"
        script.write_text(LUA, encoding="utf-8")
        data.write_bytes(b"\n".join(bodies) + b"\n")
        cmd = [binary, "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
        cmd += ["--timeout", f"{max(1, round(timeout_s))}s", "-s", str(script)]
        cmd += [f"http://127.0.0.1:{port}", "--", str(data), path, content_type, "0"]
        with out.open("wb") as sink:
            proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        text = out.read_text(errors="replace")
    line = next((ln for ln in text.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed (exit {proc.returncode}): {text[-2000:]}")
    raw: dict[str, Any] = json.loads(line.partition(" ")[2])
    return WrkResult(
        seconds=raw["duration_us"] / 1e6,
        ok=raw["ok"],
        busy=raw["busy"],
        other=raw["other"],
        socket_errors=raw["socket_errors"],
        timeouts=raw["timeouts"],
        p50_ms=raw["p50_us"] / 1e3,
        p99_ms=raw["p99_us"] / 1e3,
        client_cpu_s=usage.ru_utime + usage.ru_stime,
    )
