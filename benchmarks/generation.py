"""The generation cell (issue 14): a seeded translation model behind our server and behind
``mlflow models serve``, at UDF batch sizes, one client.

The model is the tiny seeded T5 (``fixtures.generative_model_dir("t5")``, trained to copy its
input), exported by us with ``--task translation`` and saved by MLflow's transformers flavor as a
``translation_en_to_de`` pipeline. Both decode greedily up to the model's own limits
(``generation_config.json``; no params are sent), so both do the same work. Rows are distinct
pairs of the fixture's sentences (so our in-request deduplication shares nothing). Reported:
rows/s and new tokens/s (the generated text's tokens, counted with the model's tokenizer), and
how often the two servers' outputs are identical.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np

from . import cells, client, servers
from .workload import ModelShape, Workload

TASK = "translation"
MLFLOW_TASK = "translation_en_to_de"
MAX_PROMPT_TOKENS = 30


def rows(model_dir: Path, count: int) -> Workload:
    """``count`` distinct rows (pairs of fixture sentences up to MAX_PROMPT_TOKENS tokens)."""
    from tokenizers import Tokenizer

    from exasol_mlflow_server.generative_fixtures import sample_sentences

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    texts: list[str] = []
    for a, b in itertools.permutations(sample_sentences(), 2):
        text = f"{a} {b}"
        if len(tok.encode(text).ids) <= MAX_PROMPT_TOKENS:
            texts.append(text)
        if len(texts) == count:
            break
    tokens = np.array([len(tok.encode(t).ids) for t in texts], dtype=np.int64)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    shape = ModelShape(config["num_layers"], config["d_model"], config["d_ff"])
    # FLOPs are not credited for generation (they depend on the output): zeros
    return Workload(texts, ["pair"] * len(texts), tokens, np.zeros(len(texts)), shape, 64)


def mlflow_model_dir(source: Path, cache: Path) -> Path:
    """The seeded T5 saved as MLflow's transformers-flavor translation pipeline (cached)."""
    return servers.save_transformers_model(source, "AutoModelForSeq2SeqLM", MLFLOW_TASK, cache)


def new_tokens(model_dir: Path, outputs: list[str]) -> float:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    return float(np.mean([len(tok.encode(o, add_special_tokens=False).ids) for o in outputs]))


def run_generation(bench: Any) -> None:
    from exasol_mlflow_server import fixtures

    opts, budget = bench.opts, bench.grid.mlflow
    export = servers.exported_dir(TASK, "fp32", opts.cache)
    w = rows(export, 1000)
    batches = tuple(b for b in bench.grid.mlflow_batches if b <= 100)
    systems: list[tuple[str, servers.Server]] = [
        ("server", servers.Server.ours(export, opts.cache / "logs", bench.threads, opts.device,
                                       opts.server_args, name="ours-translation")),
    ]  # fmt: skip
    if opts.run_mlflow and not servers.mlflow_available():
        src = mlflow_model_dir(fixtures.generative_model_dir("t5"), opts.cache)
        systems.append(("mlflow", servers.Server.mlflow(src, opts.cache / "logs", bench.threads)))
    info: dict[str, Any] = {"task": TASK, "rows": len(w), "systems": [s for s, _ in systems]}
    outputs: dict[str, list[str]] = {}
    for system, srv in systems:
        with srv:
            bench.results["cold_start_s"][f"generation {srv.name}"] = srv.cold_start_s
            outputs[system] = client.collect_predictions(srv.port, w.texts[:100], batch=50)
            per_row = new_tokens(export, outputs[system])
            info[f"{system}_new_tokens_per_row"] = per_row
            for batch in batches:
                requests = client.build_requests(w, max(budget.max_rows, batch), batch)
                stats = cells.measure(srv.port, w, requests, 1, budget.time_cap_s, srv.pid)
                stats["new_tokens_per_s"] = stats["rows_per_s"] * per_row
                bench.add_cell(
                    system, "fp32", batch, 1, stats, "",
                    "onnxruntime" if system == "server" else None, scenario="generation",
                )  # fmt: skip
    if "mlflow" in outputs:
        same = [a == b for a, b in zip(outputs["server"], outputs["mlflow"], strict=False)]
        info["identical_outputs"] = float(np.mean(same)) if same else None
    else:
        info["mlflow"] = servers.mlflow_available() or "not requested"
    bench.results["generation"] = info
