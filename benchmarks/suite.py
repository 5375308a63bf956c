"""One benchmark run, start to finish: machine -> exports -> in-process -> profile -> servers
-> MLflow -> quality -> targets -> report files. Every phase records what it measured in one
results dict; a phase that fails is recorded as failed and the run goes on."""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tqdm import tqdm

from . import client, inprocess, machine, profile, servers
from .config import Options
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
        self.ceiling: dict[str, float] = {}  # precision -> best in-process rows/s
        self.predictions: dict[str, list[Any]] = {}
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
    ) -> dict[str, Any]:
        cell: dict[str, Any] = {
            "system": system,
            "precision": precision,
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
            exports[precision] = export_info(path, time.perf_counter() - start)
        self.results["exports"] = exports
        rows = generate_rows(self.grid.pool_rows, opts.seed)
        self.workload = Workload.build(rows, self.dirs["fp32"])
        self.results["workload"] = {"seed": opts.seed, **self.workload.summary()}

    def inprocess(self) -> None:
        opts, w, budget = self.opts, self.workload, self.grid.inprocess
        assert w is not None
        kinds = [(k, p) for p in opts.precisions for k in ("ort-runtime", "ort-plain")]
        if not opts.skip_torch:
            kinds.append(("torch", "fp32"))
        batches: list[int | None] = [*self.grid.batches, None]  # None ("all") last: sized
        plain = [b for b in batches if b in PLAIN_BATCHES]
        total = sum(len(plain if k == "ort-plain" else batches) for k, _ in kinds)
        progress = bar(total, "in-process")
        for kind, precision in kinds:
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
                system = inprocess.make(
                    kind,
                    model_dir=self.dirs[precision],
                    workload=w,
                    threads=self.threads,
                    device=opts.device,
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
                                and c["status"] == "ok"), default=0.0)  # fmt: skip
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
                    self.add_cell(kind, precision, batch or "all", None, stats)
                    if kind == "ort-runtime":
                        best = self.ceiling.get(precision, 0.0)
                        self.ceiling[precision] = max(best, stats["rows_per_s"])
                progress.update()
            system.close()
            del system
            gc.collect()
        progress.close()

    def stage_profile(self) -> None:
        assert self.workload is not None
        log("profile: timing the request stages in-process (batch 1 and 100)")
        self.profile = profile.stage_profile(
            self.dirs["fp32"],
            self.workload,
            self.threads,
            self.opts.device,
            rows=self.grid.profile_rows,
        )
        self.results["profile"] = self.profile

    def server_grid(
        self,
        name: str,
        precision: str,
        srv: servers.Server,
        budget: Budget,
        batches: tuple[int, ...],
        clients: tuple[int, ...],
        est: float | None,
    ) -> None:
        w = self.workload
        assert w is not None
        progress = bar(len(batches) * len(clients), f"{name} {precision}")
        for batch in batches:
            for n_clients in clients:
                progress.set_postfix_str(f"batch {batch} x {n_clients} clients")
                rows, note = plan_cell(batch, n_clients, budget, est)
                if not rows:
                    self.add_cell(name, precision, batch, n_clients, None, note)
                else:
                    requests = client.build_requests(w, rows, batch)
                    load = client.run_load(
                        srv.port, client.split_clients(requests, n_clients), budget.time_cap_s
                    )
                    cell = self.add_cell(name, precision, batch, n_clients, load.stats(w))
                    if name == "mlflow" and cell["rows_per_s"] > 0:
                        est = cell["rows_per_s"] if est is None else max(est, cell["rows_per_s"])
                progress.update()
        progress.close()

    def our_server(self, precision: str) -> None:
        opts, w = self.opts, self.workload
        assert w is not None
        log(f"server: starting ours on the {precision} export")
        srv = servers.Server.ours(
            self.dirs[precision],
            opts.cache / "logs",
            self.threads,
            opts.device,
            opts.server_args,
            name=f"ours-{precision}",
        )
        with srv:
            self.results["cold_start_s"][f"server {precision}"] = srv.cold_start_s
            if precision == "fp32" and self.profile is not None:
                profile.http_profile(srv.port, self.profile)
            self.predictions[precision] = client.collect_predictions(
                srv.port, w.texts[: self.grid.quality_rows]
            )
            est = self.ceiling.get(precision)
            self.server_grid(
                "server",
                precision,
                srv,
                self.grid.server,
                self.grid.batches,
                self.grid.clients,
                est * 0.8 if est else None,
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
            self.server_grid(
                "mlflow", "fp32", srv, grid.mlflow, grid.mlflow_batches, grid.mlflow_clients, None
            )
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
        ref, low = self.opts.precisions
        preds = self.predictions
        out: dict[str, Any] = {}
        if ref in preds and low in preds:
            out[f"{low}_vs_{ref}"] = compare(self.opts.model, preds[ref], preds[low])
        if "mlflow" in preds and ref in preds and self.opts.model == servers.MLFLOW_TASK:
            out[f"mlflow_vs_{ref}"] = compare(self.opts.model, preds[ref], preds["mlflow"])
        self.results["quality"] = out


def export_info(path: Path, seconds: float) -> dict[str, Any]:
    manifest = json.loads((path / "exasol_model.json").read_text(encoding="utf-8"))
    info: dict[str, Any] = {
        "path": str(path),
        "precision": manifest.get("precision"),
        "optimization": manifest.get("optimization"),
        "quantization": manifest.get("quantization"),
        "model_bytes": (path / manifest["model_file"]).stat().st_size,
        "seconds_to_get": round(seconds, 1),
    }
    quality = path / "quality.json"
    if quality.is_file():
        q = json.loads(quality.read_text(encoding="utf-8"))
        info["exporter_quality"] = q.get("primary")
    return info


def run(opts: Options) -> dict[str, Any]:
    from .report import write_all

    start = time.perf_counter()
    clock = machine.cpu_clock(servers.untracked_cpu_s())
    bench = Run(opts)
    if bench.phase("setup", bench.setup) is None and bench.workload is None:
        raise SystemExit("benchmark setup failed:\n" + bench.results["failures"][-1]["traceback"])
    bench.phase("inprocess", bench.inprocess)
    bench.phase("profile", bench.stage_profile)
    for precision in opts.precisions:
        bench.phase(f"server-{precision}", bench.our_server, precision)
    if opts.run_mlflow:
        bench.phase("mlflow", bench.mlflow)
    else:
        bench.results["mlflow"] = {
            "status": "skipped",
            "reason": "not requested (--skip-mlflow, or --quick without --mlflow)",
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
