"""Where the benchmarks write: in a source checkout, into it; from an installed wheel, elsewhere.

From a checkout (``benchmarks/`` beside ``pyproject.toml`` and ``.git``) results go to
``benchmarks/results/`` (committed runs) and caches to ``.cache/bench/``. From a wheel the package
lives in site-packages, which is no place for results: they go to ``./benchmark-results`` and the
caches to ``$XDG_CACHE_HOME/exasol-mlflow-server/bench`` (or ``~/.cache/...``).
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
CHECKOUT = HERE.parent if (HERE.parent / "pyproject.toml").is_file() else None


def default_out() -> Path:
    return HERE / "results" if CHECKOUT else Path.cwd() / "benchmark-results"


def default_cache() -> Path:
    if CHECKOUT:
        return CHECKOUT / ".cache" / "bench"
    from exasol_mlflow_server.runtime.settings import Settings

    return Settings().resolved_cache_dir() / "bench"
