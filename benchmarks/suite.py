"""One benchmark run, start to finish: machine -> exports -> in-process -> profile -> servers
-> repeated columns -> overload -> MLflow -> infinity-emb -> quality -> targets -> report files.
Every phase records what it measured in one results dict; a phase that fails is recorded as
failed and the run goes on.

A *variant* is one way of serving the model (``config.Variant``): ONNX Runtime fp32, ONNX Runtime
int8 and OpenVINO bf16 (on the fp32 export), always with an explicit ``--backend``."""

from __future__ import annotations

import gc
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import cells, client, inprocess, machine, profile, servers
from .config import Options, Variant
from .quality import compare
from .rows import generate_rows
from .workload import Budget, Workload, plan_cell

PLAIN_BATCHES = (None, 1, 100)  # the plain session is a reference point, not a grid


def log(message: str) -> None:
    tqdm.write(f"[bench] {message}", file=sys.stderr)


def bar(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)


class Run:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.grid = opts.grid
        self.threads = opts.n_threads
        self.results: dict[str, Any] = {
            "format_version": 1,
            "command": "python -m exasol_mlflow_server.benchmarks " + " ".join(opts.argv),
            "options": opts.to_json(),
            "cells": [],
            "cold_start_s": {},
            "failures": [],
            "timings_s": {},
            "foreign_load": {},  # CPU other processes took per phase: noise in the numbers
        }
        self.peak = 0.0
        self.dirs: dict[str, Path] = {}
        self.workload: Workload | None = None
        self.variants = opts.variants()
        self.ceiling: dict[str, float] = {}  # variant -> best in-process rows/s
        self.predictions: dict[str, list[Any]] = {}  # variant (or "mlflow") -> predictions
        self.profile: dict[str, Any] | None = None

    # ---- bookkeeping ------------------------------------------------------------------------
    def phase(self, name: str, fn: Any, *args: Any) -> Any:
        start = time.perf_counter()
        clock = machine.cpu_clock(servers.untracked_cpu_s())
        try:
            return fn(*args)
        except Exception as exc:
            log(f"{name} failed: {type(exc).__name__}: {exc}")
            self.results["failures"].append(
                {
                    "phase": name,
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-4000:],
                }
            )
            return None
        finally:
            seconds = time.perf_counter() - start
            self.results["timings_s"][name] = round(seconds, 1)
            self.results["foreign_load"][name] = machine.foreign_load(
                clock, machine.cpu_clock(servers.untracked_cpu_s()), seconds, self.threads
            )

    def add_cell(
        self,
        system: str,
        precision: str,
        batch: int | str,
        clients: int | None,
        stats: dict[str, Any] | None,
        note: str = "",
        backend: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        cell: dict[str, Any] = {
            "system": system,
            "backend": backend,
            "precision": precision,
            **extra,
            "batch": batch,
            "clients": clients,
            "status": "ok" if stats else "skipped",
            "note": note,
        }
        if stats:
            cell.update(stats)
            peak = self.peak
            gpu = self.results.get("peak_cuda") or {}
            if self.opts.device == "cuda" and system != "mlflow":  # GPU cells: the GPU's peak
                peak = gpu.get(f"{precision}_flops_per_s") or gpu.get("fp32_flops_per_s") or peak
            cell["efficiency"] = stats["flops_per_s"] / peak if peak else None
        self.results["cells"].append(cell)
        return cell

    # ---- phases -----------------------------------------------------------------------------
    def setup(self) -> None:
        opts = self.opts
        log(f"machine: measuring the float32 GEMM peak on {self.threads} threads")
        self.results["environment"] = machine.environment()
        self.results["peak"] = machine.peak_in_subprocess(self.threads, 0.5 if opts.quick else 1.5)
        self.peak = float(self.results["peak"].get("flops_per_s") or 0.0)
        if opts.device == "cuda":
            self.results["peak_cuda"] = machine.peak_cuda()
        exports = {}
        for precision in opts.precisions:
            log(f"export: {opts.model} {precision} (cached under {opts.cache})")
            start = time.perf_counter()
            path = servers.exported_dir(opts.model, precision, opts.cache)
            self.dirs[precision] = path
            exports[precision] = servers.export_info(path, time.perf_counter() - start)
        self.results["exports"] = exports
        self.results["variants"] = [vars(v) for v in self.variants]
        self.results["native_bf16"] = machine.native_bf16()
        rows = generate_rows(self.grid.pool_rows, opts.seed)
        self.workload = Workload.build(rows, self.dirs["fp32"])
        self.results["workload"] = {"seed": opts.seed, **self.workload.summary()}

    def inprocess(self) -> None:
        opts, w, budget = self.opts, self.workload, self.grid.inprocess
        assert w is not None
        kinds: list[tuple[str, Variant | None]] = [("runtime", v) for v in self.variants]
        kinds += [("ort-plain", v) for v in self.variants if v.backend == "onnxruntime"]
        if not opts.skip_torch:
            kinds.append(("torch", None))
        batches: list[int | None] = [*self.grid.batches, None]  # None ("all") last: sized
        plain = [b for b in batches if b in PLAIN_BATCHES]
        total = sum(len(plain if k == "ort-plain" else batches) for k, _ in kinds)
        progress = bar(total, "in-process")
        for kind, variant in kinds:
            precision = variant.precision if variant else "fp32"
            backend = variant.backend if variant else None
            if kind == "torch":
                system = inprocess.make(
                    kind,
                    source_dir=servers.source_model_dir(opts.model),
                    task=opts.model,
                    workload=w,
                    threads=self.threads,
                    device=opts.device,
                )
            else:
                assert variant is not None
                system = inprocess.make(
                    kind,
                    model_dir=self.dirs[variant.export],
                    workload=w,
                    threads=self.threads,
                    device=opts.device,
                    **({"backend": variant.backend} if kind == "runtime" else {}),
                )
            sec_per_token: float | None = None
            for batch in plain if kind == "ort-plain" else batches:
                progress.set_postfix_str(f"{kind} {precision} batch {batch or 'all'}")
                if kind == "torch" and batch is None:
                    progress.update()
                    continue  # the PyTorch pipeline does not sort a whole table
                rows = max(budget.max_rows, batch or 0)
                if batch is None:  # runs to the end: fit it in the cap at the best rate so far
                    best = max((c["rows_per_s"] for c in self.results["cells"]
                                if c["system"] == kind and c["precision"] == precision
                                and c["backend"] == backend and c["status"] == "ok"),
                               default=0.0)  # fmt: skip
                    if best:
                        rows = int(min(rows, max(50, 1.5 * best * budget.time_cap_s)))
                first = w.indices(0, batch or rows)
                est = (sec_per_token or 0.0) * inprocess.padded_tokens(system, w, first)
                if kind == "torch" and est > budget.max_cell_s:
                    self.add_cell(
                        kind,
                        precision,
                        batch or "all",
                        None,
                        None,
                        f"skipped: one batch of {batch} rows would take about "
                        f"{est:.0f} s (cell limit {budget.max_cell_s:.0f} s)",
                        backend,
                    )
                else:
                    stats = inprocess.run_cell(system, w, batch, rows, budget)
                    done = stats["rows"]
                    size = batch or max(done, 1)
                    tokens = sum(
                        inprocess.padded_tokens(system, w, w.indices(s, min(size, done - s)))
                        for s in range(0, done, size)
                    )
                    sec_per_token = stats["seconds"] / max(tokens, 1)
                    stats["padding"] = tokens / max(int(w.tokens[w.indices(0, done)].sum()), 1)
                    self.add_cell(kind, precision, batch or "all", None, stats, "", backend)
                    if kind == "runtime" and variant is not None:
                        best = self.ceiling.get(variant.name, 0.0)
                        self.ceiling[variant.name] = max(best, stats["rows_per_s"])
                progress.update()
            system.close()
            del system
            gc.collect()
        progress.close()

    @property
    def fast_reference(self) -> Variant:
        """The fastest fp32-grade variant we expect: OpenVINO where installed, else ORT fp32."""
        graded = [v for v in self.variants if v.fp32_grade]
        return next((v for v in graded if v.backend == "openvino"), graded[0])

    def stage_profile(self) -> None:
        assert self.workload is not None
        variant = self.fast_reference
        log(f"profile: timing the request stages in-process ({variant.name}, batch 1 and 100)")
        self.profile = profile.stage_profile(
            self.dirs[variant.export],
            self.workload,
            self.threads,
            self.opts.device,
            rows=self.grid.profile_rows,
            backend=variant.backend,
        )
        self.profile["variant"] = variant.name
        self.results["profile"] = self.profile

    def server_grid(
        self,
        name: str,
        precision: str,
        srv: servers.Server,
        budget: Budget,
        shape: list[tuple[int, int]],
        est: float | None,
        backend: str | None = None,
    ) -> None:
        w = self.workload
        assert w is not None
        progress = bar(len(shape), f"{name} {backend or ''} {precision}")
        for batch, n_clients in shape:
            progress.set_postfix_str(f"batch {batch} x {n_clients} clients")
            rows, note = plan_cell(batch, n_clients, budget, est)
            if not rows:
                self.add_cell(name, precision, batch, n_clients, None, note, backend)
            else:
                requests = client.build_requests(w, rows, batch)
                stats = cells.measure(srv.port, w, requests, n_clients, budget.time_cap_s, srv.pid)
                cell = self.add_cell(name, precision, batch, n_clients, stats, "", backend)
                if name == "mlflow" and cell["rows_per_s"] > 0:
                    est = cell["rows_per_s"] if est is None else max(est, cell["rows_per_s"])
            progress.update()
        progress.close()

    def grid_shape(self, batches: tuple[int, ...], clients: tuple[int, ...]) -> list:
        shape = [(b, c) for b in batches for c in clients]
        return shape + [cell for cell in self.grid.extra_cells if cell not in shape]

    def our_server(self, variant: Variant) -> None:
        opts, w = self.opts, self.workload
        assert w is not None
        log(f"server: starting ours, {variant.name} (--backend {variant.backend})")
        srv = servers.Server.ours(
            self.dirs[variant.export],
            opts.cache / "logs",
            self.threads,
            opts.device,
            opts.server_args,
            name=f"ours-{variant.name}",
            backend=variant.backend,
        )
        with srv:
            self.results["cold_start_s"][f"server {variant.name}"] = srv.cold_start_s
            if variant == self.fast_reference and self.profile is not None:
                profile.http_profile(srv.port, self.profile)
            self.predictions[variant.name] = client.collect_predictions(
                srv.port, w.texts[: self.grid.quality_rows]
            )
            est = self.ceiling.get(variant.name)
            self.server_grid(
                "server",
                variant.precision,
                srv,
                self.grid.server,
                self.grid_shape(self.grid.batches, self.grid.clients),
                est * 0.8 if est else None,
                variant.backend,
            )

    def mlflow(self) -> None:
        opts, w, grid = self.opts, self.workload, self.grid
        assert w is not None
        missing = servers.mlflow_available()
        if missing:
            self.results["mlflow"] = {"status": "skipped", "reason": missing}
            log(f"mlflow: skipped: {missing}")
            return
        log("mlflow: saving the classifier with the transformers flavor (cached)")
        model_dir = servers.mlflow_model_dir(opts.cache)
        log("mlflow: starting `mlflow models serve --env-manager local`")
        srv = servers.Server.mlflow(model_dir, opts.cache / "logs", self.threads)
        with srv:
            self.results["cold_start_s"]["mlflow"] = srv.cold_start_s
            n = min(grid.quality_rows, 200)
            self.predictions["mlflow"] = client.collect_predictions(srv.port, w.texts[:n])
            shape = [(b, c) for b in grid.mlflow_batches for c in grid.mlflow_clients]
            self.server_grid("mlflow", "fp32", srv, grid.mlflow, shape, None)
        self.results["mlflow"] = {
            "status": "ok",
            "model": str(model_dir),
            "task": servers.MLFLOW_TASK,
        }

    def registry(self) -> None:
        from .registry import run_registry_benchmark

        log("registry: both servers on the same models:/ URI (MLflow tracking server)")
        self.results["registry"] = run_registry_benchmark(
            self.opts.cache / "registry", quick=self.opts.quick, threads=self.threads
        )

    def quality(self) -> None:
        preds, ref = self.predictions, self.variants[0].name
        out: dict[str, Any] = self.results.get("quality", {})
        for name in [v.name for v in self.variants[1:]] + ["mlflow"]:
            if name in preds and ref in preds:
                if name == "mlflow" and self.opts.model != servers.MLFLOW_TASK:
                    continue
                out[f"{name}_vs_{ref}"] = compare(self.opts.model, preds[ref], preds[name])
        self.results["quality"] = out


def run(opts: Options) -> dict[str, Any]:
    from . import generation, peers, scenarios
    from .report import write_all

    start = time.perf_counter()
    clock = machine.cpu_clock(servers.untracked_cpu_s())
    bench = Run(opts)
    if bench.phase("setup", bench.setup) is None and bench.workload is None:
        raise SystemExit("benchmark setup failed:\n" + bench.results["failures"][-1]["traceback"])
    bench.phase("inprocess", bench.inprocess)
    bench.phase("profile", bench.stage_profile)
    for variant in bench.variants:
        bench.phase(f"server-{variant.name}", bench.our_server, variant)
    bench.phase("repeats", scenarios.repeated_columns, bench)
    bench.phase("overload", scenarios.overload, bench)
    if opts.run_mlflow:
        bench.phase("mlflow", bench.mlflow)
    else:
        bench.results["mlflow"] = {
            "status": "skipped",
            "reason": "not requested (--skip-mlflow, or --quick without --mlflow)",
        }
    bench.phase("generation", generation.run_generation, bench)
    if opts.run_infinity:
        bench.phase("infinity", peers.run_peers, bench)
    else:
        bench.results["infinity"] = {
            "status": "skipped",
            "reason": "not requested (--skip-infinity, or --quick without --infinity)",
        }
    if opts.registry:
        bench.phase("registry", bench.registry)
    bench.phase("quality", bench.quality)
    if bench.profile is not None:
        profile.strip_bodies(bench.profile)
    total = time.perf_counter() - start
    bench.results["timings_s"]["total"] = round(total, 1)
    bench.results["foreign_load"]["total"] = machine.foreign_load(
        clock, machine.cpu_clock(servers.untracked_cpu_s()), total, bench.threads
    )
    write_all(bench.results, opts.out)
    from .targets import describe

    for target in bench.results["targets"]:
        log(f"target: {target['name']}: {describe(target)} ({target['detail']})")
    log(f"done in {bench.results['timings_s']['total']:.0f} s: {opts.out / 'report.md'}")
    return bench.results
