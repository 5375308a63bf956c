"""Command-line options and the two run sizes (full and ``--quick``)."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .paths import default_cache, default_out
from .rows import DEFAULT_SEED
from .workload import Budget

DEFAULT_OUT = default_out()
DEFAULT_CACHE = default_cache()


@dataclass(frozen=True)
class Variant:
    """One way of serving the model: an export precision on an explicit backend."""

    name: str  # "ort-fp32", "ort-int8", "ov-bf16", "ort-fp16"
    export: str  # the export's precision: fp32, int8, fp16
    backend: str  # onnxruntime or openvino (``--backend``; never auto)
    precision: str  # what the arithmetic runs in
    fp32_grade: bool  # accurate to fp32 (fp32 itself, or bf16: mean cosine >= 0.9999)


def openvino_variant() -> Variant | None:
    """OpenVINO on the fp32 export, in bf16 where the CPU has it; None without the package."""
    from exasol_mlflow_server.runtime.openvino_session import (
        cpu_has_native_bf16,
        openvino_available,
    )

    if not openvino_available():
        return None
    precision = "bf16" if cpu_has_native_bf16() else "fp32"
    return Variant(f"ov-{precision}", "fp32", "openvino", precision, True)


@dataclass(frozen=True)
class Overload:
    """3x capacity: ``clients`` x ``batch``-row requests against ``--max-queued-rows queue``."""

    batch: int
    clients: int
    queue: int
    seconds: float
    capacity_clients: int  # the capacity cell: the same requests, few enough to never queue over
    capacity_rounds: int


@dataclass(frozen=True)
class Grid:
    batches: tuple[int, ...]
    clients: tuple[int, ...]
    pool_rows: int  # distinct generated rows; cells wrap around them
    server: Budget
    inprocess: Budget
    mlflow_batches: tuple[int, ...]
    mlflow_clients: tuple[int, ...]
    mlflow: Budget
    quality_rows: int  # rows compared between fp32, low precision and MLflow
    profile_rows: int
    extra_cells: tuple[tuple[int, int], ...]  # (batch, clients) beyond the grid: target cells
    peers: Budget  # infinity-emb vs ours on the embeddings model
    peer_cells: tuple[tuple[int, int], ...]
    repeats: Budget  # the repeated-column cells (100-row requests, 1 client)
    overload: Overload


FULL = Grid(
    batches=(1, 10, 100, 1000),
    clients=(1, 4, 16),
    pool_rows=4000,
    server=Budget(max_rows=2000, time_cap_s=8.0, max_cell_s=25.0),
    inprocess=Budget(max_rows=2000, time_cap_s=8.0, max_cell_s=25.0),
    mlflow_batches=(1, 10, 100),
    mlflow_clients=(1, 4),
    mlflow=Budget(max_rows=1000, time_cap_s=8.0, max_cell_s=60.0),
    quality_rows=500,
    profile_rows=200,
    extra_cells=(),
    peers=Budget(max_rows=2000, time_cap_s=8.0, max_cell_s=40.0),
    peer_cells=((100, 1), (100, 4), (1, 16)),
    repeats=Budget(max_rows=2000, time_cap_s=8.0, max_cell_s=40.0),
    overload=Overload(
        batch=500, clients=24, queue=3000, seconds=20.0, capacity_clients=4, capacity_rounds=2
    ),
)
QUICK = Grid(
    batches=(1, 100),
    clients=(1, 4),
    pool_rows=400,
    server=Budget(max_rows=200, time_cap_s=1.0, max_cell_s=10.0),
    inprocess=Budget(max_rows=200, time_cap_s=0.5, max_cell_s=8.0),
    mlflow_batches=(1, 100),
    mlflow_clients=(1,),
    mlflow=Budget(max_rows=100, time_cap_s=2.0, max_cell_s=60.0),
    quality_rows=100,
    profile_rows=50,
    extra_cells=((1, 16),),
    peers=Budget(max_rows=200, time_cap_s=1.0, max_cell_s=20.0),
    peer_cells=((100, 1), (1, 16)),
    repeats=Budget(max_rows=300, time_cap_s=1.0, max_cell_s=10.0),
    overload=Overload(
        batch=100, clients=24, queue=600, seconds=2.0, capacity_clients=4, capacity_rounds=1
    ),
)


@dataclass
class Options:
    quick: bool = False
    out: Path = DEFAULT_OUT
    model: str = "text-classification"
    device: str = "cpu"
    threads: int = 0
    skip_mlflow: bool = False
    mlflow: bool = False
    skip_infinity: bool = False
    infinity: bool = False
    skip_torch: bool = False
    registry: bool = False
    cache: Path = DEFAULT_CACHE
    seed: int = DEFAULT_SEED
    server_args: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)

    @property
    def grid(self) -> Grid:
        return QUICK if self.quick else FULL

    @property
    def n_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )

    @property
    def precisions(self) -> tuple[str, str]:
        """(reference, low precision): int8 on CPU, fp16 on CUDA."""
        return ("fp32", "fp16") if self.device == "cuda" else ("fp32", "int8")

    def variants(self) -> list[Variant]:
        """ORT fp32 (the reference), ORT int8 (fp16 on CUDA) and OpenVINO where installed (CPU)."""
        ref, low = self.precisions
        out = [
            Variant(f"ort-{ref}", ref, "onnxruntime", ref, True),
            Variant(f"ort-{low}", low, "onnxruntime", low, False),
        ]
        ov = openvino_variant() if self.device == "cpu" else None
        return [*out, ov] if ov else out

    @property
    def run_mlflow(self) -> bool:
        return not self.skip_mlflow and (self.mlflow or not self.quick)

    @property
    def run_infinity(self) -> bool:
        return not self.skip_infinity and (self.infinity or not self.quick)

    def to_json(self) -> dict[str, Any]:
        data = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        data["threads"] = self.n_threads
        data["grid"] = asdict(self.grid)
        data["precisions"] = list(self.precisions)
        data["run_mlflow"] = self.run_mlflow
        data["run_infinity"] = self.run_infinity
        return data


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m exasol_mlflow_server.benchmarks",
        description="Benchmark our server (ONNX Runtime fp32 and int8, OpenVINO bf16) against the "
        "in-process ceilings, a PyTorch pipeline, `mlflow models serve` and infinity-emb, on the "
        "same model, rows and machine.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny grid for CI (batch 1 and 100 x clients 1 and 4, batch 1 x 16; no MLflow, "
        "no infinity-emb)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="results folder (default: %(default)s)"
    )
    parser.add_argument(
        "--model",
        choices=("text-classification", "feature-extraction"),
        default="text-classification",
        help="seeded MiniLM classifier, or all-MiniLM-L6-v2 embeddings",
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="cuda: fp16 export + CUDA execution provider (default: cpu)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads for every system (default: the CPUs this process may use)",
    )
    parser.add_argument("--skip-mlflow", action="store_true", help="do not run MLflow's server")
    parser.add_argument("--mlflow", action="store_true", help="run MLflow's server in --quick too")
    parser.add_argument(
        "--skip-infinity", action="store_true", help="do not run infinity-emb (the second peer)"
    )
    parser.add_argument("--infinity", action="store_true", help="run infinity-emb in --quick too")
    parser.add_argument("--skip-torch", action="store_true", help="do not run the PyTorch baseline")
    parser.add_argument(
        "--registry",
        action="store_true",
        help="also run the registry row (benchmarks/registry.py): both servers on the same "
        "models:/ URI of a local MLflow tracking server (adds a few minutes)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help="where exports are cached (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="row generator seed")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        dest="server_args",
        metavar="ARG",
        help="extra argument for our server, e.g. --server-arg=--max-batch-delay-ms=0 (repeatable)",
    )
    ns = parser.parse_args(argv)
    return Options(
        quick=ns.quick,
        out=ns.out,
        model=ns.model,
        device=ns.device,
        threads=ns.threads,
        skip_mlflow=ns.skip_mlflow,
        mlflow=ns.mlflow,
        skip_infinity=ns.skip_infinity,
        infinity=ns.infinity,
        skip_torch=ns.skip_torch,
        registry=ns.registry,
        cache=ns.cache,
        seed=ns.seed,
        server_args=ns.server_args,
        argv=list(argv or []),
    )
