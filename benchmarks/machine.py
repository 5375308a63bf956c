"""The machine a run happened on: CPU, versions, commit, and a measured FP32 GEMM peak.

The GEMM peak is measured in a *subprocess* (``python -m exasol_mlflow_server.benchmarks.machine
peak``) with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` removed from its environment: some
machines set them so that old OpenBLAS builds pick a safe (slow) kernel, which would understate
the peak. The subprocess reports which BLAS and kernel ran (threadpoolctl), so the report can say.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .paths import CHECKOUT

BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
INTERESTING_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
    "avx_vnni",
)
PACKAGES = (
    "exasol-mlflow-server",
    "onnxruntime",
    "onnxruntime-gpu",
    "torch",
    "transformers",
    "tokenizers",
    "optimum-onnx",
    "openvino",
    "mlflow",
    "numpy",
    "falcon",
    "waitress",
    "orjson",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key == "flags":
                flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "cores": cores,
        "flags": [f for f in INTERESTING_FLAGS if f in flags],
        "machine": platform.machine(),
    }


def _wrk_version() -> str | None:
    from .wrk import wrk_binary

    binary = wrk_binary()
    if binary is None:
        return None
    proc = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (
        (proc.stdout or proc.stderr).splitlines()[0].strip()
        if proc.stdout or proc.stderr
        else binary
    )


def git_commit() -> dict[str, Any]:
    """The checkout's commit, or -- run from an installed wheel -- only the package version."""
    from exasol_mlflow_server import __version__

    if CHECKOUT is None:
        return {"commit": None, "dirty": None, "version": __version__}

    def git(*args: str) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=CHECKOUT, capture_output=True, text=True, check=False
        )
        return proc.stdout.strip()

    commit = git("rev-parse", "HEAD") or None
    return {"commit": commit, "dirty": bool(git("status", "--porcelain")), "version": __version__}


def environment() -> dict[str, Any]:
    """The environment block of ``results.json`` (everything but the GEMM peak)."""
    import onnxruntime

    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu_info(),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: v for p in PACKAGES if (v := _version(p))},
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "git": git_commit(),
        "blas_env": {k: os.environ[k] for k in BLAS_ENV if k in os.environ},
        "wrk": _wrk_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def native_bf16() -> dict[str, Any]:
    """Does this CPU compute in bf16 natively (AMX-BF16 / AVX512-BF16), and who says so."""
    from exasol_mlflow_server.runtime.openvino_session import (
        cpu_bf16_flags,
        cpu_has_native_bf16,
        openvino_available,
    )

    return {
        "native": cpu_has_native_bf16(),
        "flags": cpu_bf16_flags(),
        "amx": "amx_bf16" in cpu_bf16_flags(),
        "source": "OpenVINO OPTIMIZATION_CAPABILITIES" if openvino_available() else "cpuinfo",
    }


# ---- other processes' CPU use (noise) ---------------------------------------------------------
def cpu_clock(extra_own_s: float = 0.0) -> tuple[float, float]:
    """(CPU-seconds the whole machine was busy, CPU-seconds of this process, its reaped
    children and ``extra_own_s``) so far. Their difference over a phase is what *other*
    processes took."""
    busy = 0.0
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
        busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        pass
    own = sum(os.times()[:4]) + extra_own_s
    return busy, own


def foreign_load(
    before: tuple[float, float], after: tuple[float, float], seconds: float, cores: int
) -> dict[str, float]:
    """CPU other processes used between two :func:`cpu_clock` readings."""
    foreign = max(0.0, (after[0] - before[0]) - (after[1] - before[1]))
    return {"cpu_s": round(foreign, 1), "share": round(foreign / max(seconds * cores, 1e-9), 3)}


# ---- the GEMM peak --------------------------------------------------------------------------
def measure_peak(threads: int, seconds: float = 1.0, sizes: tuple[int, ...] = (1024, 2048)) -> dict:
    """Best float32 GEMM rate (FLOP/s) of numpy's BLAS on ``threads`` threads, in this process."""
    import numpy as np

    info: list[dict[str, Any]] = []
    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with our environment
        threadpool_info = threadpool_limits = None
    best: dict[str, float] = {}
    rng = np.random.default_rng(0)
    limiter = threadpool_limits(limits=threads, user_api="blas") if threadpool_limits else None
    try:
        for n in sizes:
            a = rng.standard_normal((n, n), dtype=np.float32)
            b = rng.standard_normal((n, n), dtype=np.float32)
            np.dot(a, b)  # warm up (thread pool, page faults)
            rate, deadline = 0.0, time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                np.dot(a, b)
                rate = max(rate, 2.0 * n**3 / (time.perf_counter() - start))
            best[str(n)] = rate
        if threadpool_info is not None:
            keys = ("internal_api", "version", "architecture", "num_threads", "threading_layer")
            info = [
                {k: d.get(k) for k in keys}
                for d in threadpool_info()
                if d.get("user_api") == "blas"
            ]
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    return {
        "flops_per_s": max(best.values()),
        "by_size": best,
        "threads": threads,
        "blas": info,
        "env_removed": list(BLAS_ENV),
    }


def peak_in_subprocess(threads: int, seconds: float = 1.0) -> dict[str, Any]:
    """Run :func:`measure_peak` in a fresh interpreter without the OpenBLAS overrides."""
    env = {k: v for k, v in os.environ.items() if k not in BLAS_ENV}
    env["OMP_NUM_THREADS"] = env["OPENBLAS_NUM_THREADS"] = str(threads)
    cmd = [
        sys.executable,
        "-m",
        "exasol_mlflow_server.benchmarks.machine",
        "peak",
        "--threads",
        str(threads),
        "--seconds",
        str(seconds),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        return {"flops_per_s": None, "error": proc.stderr.strip()[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["env_removed"] = [k for k in BLAS_ENV if k in os.environ]
    return result


def peak_cuda(seconds: float = 1.0) -> dict[str, Any] | None:
    """fp16 and fp32 matmul peak of the first CUDA device with torch, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    n = 8192
    for name, dtype in (("fp16", torch.float16), ("fp32", torch.float32)):
        a = torch.randn(n, n, device="cuda", dtype=dtype)
        b = torch.randn(n, n, device="cuda", dtype=dtype)
        torch.matmul(a, b)
        torch.cuda.synchronize()
        rate, deadline = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            torch.matmul(a, b)
            torch.cuda.synchronize()
            rate = max(rate, 2.0 * n**3 / (time.perf_counter() - start))
        out[f"{name}_flops_per_s"] = rate
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m exasol_mlflow_server.benchmarks.machine")
    sub = parser.add_subparsers(dest="what", required=True)
    peak = sub.add_parser("peak", help="print the float32 GEMM peak of this process as JSON")
    peak.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    peak.add_argument("--seconds", type=float, default=1.0)
    sub.add_parser("env", help="print the environment block as JSON")
    args = parser.parse_args(argv)
    if args.what == "peak":
        print(json.dumps(measure_peak(args.threads, args.seconds)))
    else:
        print(json.dumps(environment(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
