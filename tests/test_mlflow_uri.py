"""MLflow URI handling without a tracking server: parsing, flavors and tasks, the download cache's
completeness check, the drop-in `mlflow models serve` flags and variables, and the message when
MLflow is not installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from exasol_mlflow_server.runtime import mlflow_cache
from exasol_mlflow_server.runtime.errors import ModelLoadError
from exasol_mlflow_server.runtime.mlflow_uri import identity_of, is_mlflow_uri, parse_uri
from exasol_mlflow_server.runtime.settings import add_arguments, from_sources


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("models:/clf/3", {"kind": "version", "name": "clf", "version": "3"}),
        ("models:/clf@champion", {"kind": "alias", "name": "clf", "alias": "champion"}),
        ("models:/clf/latest", {"kind": "latest", "name": "clf"}),
        ("models:/clf/Production", {"kind": "stage", "name": "clf", "stage": "Production"}),
        ("models:/cat.schema.clf@prod", {"kind": "alias", "name": "cat.schema.clf"}),
        ("models:/m-0123abcd", {"kind": "logged", "path": "m-0123abcd"}),
        ("runs:/abc123/model", {"kind": "run", "run_id": "abc123", "path": "model"}),
        ("runs:/abc123/nested/model", {"kind": "run", "run_id": "abc123", "path": "nested/model"}),
        ("file:///tmp/some%20dir", {"kind": "local", "path": "/tmp/some dir"}),
        ("file:/tmp/x", {"kind": "local", "path": "/tmp/x"}),
        ("s3://bucket/model", {"kind": "artifact"}),
    ],
)
def test_parse_uri(uri, expected):
    ref = parse_uri(uri)
    assert is_mlflow_uri(uri)
    for key, value in expected.items():
        assert getattr(ref, key) == value, (key, ref)


@pytest.mark.parametrize("uri", ["models:/", "models:/clf@", "models:/@a", "runs:/abc", "runs:/"])
def test_bad_uris_are_clear_errors(uri):
    with pytest.raises(ModelLoadError, match="not a valid MLflow model URI"):
        parse_uri(uri)


def test_local_paths_and_hub_ids_are_not_mlflow_uris():
    for model in ("/models/clf", "./clf", "sentence-transformers/all-MiniLM-L6-v2", "clf"):
        assert not is_mlflow_uri(model)


def test_flavor_check_names_the_supported_flavors():
    assert mlflow_cache.check_flavors({"python_function": {}, "exasol_onnx": {}}, "u") == (
        "exasol_onnx"
    )
    assert mlflow_cache.check_flavors({"transformers": {}, "python_function": {}}, "u") == (
        "transformers"
    )
    with pytest.raises(ModelLoadError) as err:
        mlflow_cache.check_flavors({"sklearn": {}, "python_function": {}}, "models:/x/1")
    for word in ("sklearn", "exasol_onnx", "transformers", "sentence_transformers"):
        assert word in err.value.message


@pytest.mark.parametrize(
    ("task", "ours"),
    [
        ("text-classification", "text-classification"),
        ("sentiment-analysis", "text-classification"),
        ("feature-extraction", "feature-extraction"),
        ("token-classification", "token-classification"),
        ("ner", "token-classification"),
        ("question-answering", "question-answering"),
        ("zero-shot-classification", "zero-shot-classification"),
        ("fill-mask", "fill-mask"),
    ],
)
def test_transformers_tasks_map_to_ours(task, ours):
    assert mlflow_cache.flavor_task("transformers", {"task": task}, "u") == ours


def test_unsupported_task_and_sentence_transformers():
    assert mlflow_cache.flavor_task("sentence_transformers", {}, "u") == "feature-extraction"
    assert mlflow_cache.flavor_task("transformers", {"task": "text-generation"}, "u") == (
        "text-generation"
    )
    with pytest.raises(ModelLoadError, match="image-classification"):
        mlflow_cache.flavor_task("transformers", {"task": "image-classification"}, "u")


def test_download_entry_completeness(tmp_path):
    entry = tmp_path / "entry"
    (entry / "model").mkdir(parents=True)
    (entry / "model" / "w.bin").write_bytes(b"x" * 100)
    (entry / "MLmodel").write_text("flavors: {}\n")
    assert not mlflow_cache.entry_ok(entry)  # no manifest: a crashed or foreign directory
    files = mlflow_cache._files(entry)
    (entry / mlflow_cache.COMPLETE).write_text(json.dumps({"files": files}))
    assert mlflow_cache.entry_ok(entry)
    (entry / "model" / "w.bin").write_bytes(b"x" * 50)  # truncated
    assert not mlflow_cache.entry_ok(entry)
    (entry / "model" / "w.bin").unlink()
    assert not mlflow_cache.entry_ok(entry)


def test_transformers_layout_becomes_one_hf_dir(tmp_path):
    model = tmp_path / "m"
    (model / "model").mkdir(parents=True)
    (model / "components" / "tokenizer").mkdir(parents=True)
    (model / "model" / "config.json").write_text("{}")
    (model / "model" / "model.safetensors").write_bytes(b"w")
    (model / "components" / "tokenizer" / "tokenizer.json").write_text("{}")
    conf = {"model_binary": "model", "components": ["tokenizer"], "task": "fill-mask"}
    mlflow_cache.link_hf_dir(model, "transformers", conf, "u")
    hf = model / "hf"
    assert sorted(p.name for p in hf.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert (hf / "tokenizer.json").read_text() == "{}"
    assert all(p.is_symlink() and not os.path.isabs(os.readlink(p)) for p in hf.iterdir())
    with pytest.raises(ModelLoadError, match="without its weights"):
        mlflow_cache.link_hf_dir(tmp_path, "transformers", {"components": []}, "u")


def test_alias_cache_round_trip(tmp_path):
    from exasol_mlflow_server.runtime.settings import Settings

    cache = mlflow_cache.AliasCache(Settings(cache_dir=str(tmp_path)))
    assert cache.get("http://t", "clf", "champion") is None
    cache.put("http://t", "clf", "champion", "7")
    assert cache.get("http://t", "clf", "champion") == "7"
    assert cache.get("http://other", "clf", "champion") is None


def test_identity_only_for_mlflow_uris(tmp_path):
    assert identity_of("/some/dir", tmp_path).version is None
    (tmp_path / "mlflow_source.json").write_text(json.dumps({"name": "clf", "version": "4"}))
    ident = identity_of("models:/clf@champion", tmp_path)
    assert (ident.name, ident.version, ident.alias) == ("clf", "4", "champion")
    assert identity_of("models:/clf/4", tmp_path).alias is None


def _parse(argv: list[str], env: dict[str, str]):
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return from_sources(parser.parse_args(argv), env)


def test_mlflow_models_serve_flags_and_variables():
    s = _parse(
        ["-m", "models:/clf@champion", "-p", "6000", "-w", "3", "-t", "45", "--host", "::"], {}
    )
    assert (s.model, s.port, s.workers, s.request_timeout, s.host) == (
        ("models:/clf@champion",),
        6000,
        3,
        45.0,
        "::",
    )
    assert _parse(["--model-uri", "runs:/r/model"], {}).model == ("runs:/r/model",)
    env = {
        "MLFLOW_PORT": "6100",
        "MLFLOW_HOST": "0.0.0.0",
        "MLFLOW_MODELS_WORKERS": "2",
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "90",
        "MLFLOW_TRACKING_URI": "http://tracking:5000",
    }
    s = _parse([], env)
    assert (s.port, s.host, s.workers, s.request_timeout) == (6100, "0.0.0.0", 2, 90.0)
    assert s.tracking_uri == "http://tracking:5000"
    assert _parse(["--tracking-uri", "http://x"], env).tracking_uri == "http://x"
    assert _parse([], {**env, "EMS_TRACKING_URI": "http://ems"}).tracking_uri == "http://ems"


def test_reload_interval_default_and_off():
    assert _parse([], {}).reload_interval == 30.0
    assert _parse(["--reload-interval", "0"], {}).reload_interval == 0.0
    assert _parse([], {"EMS_RELOAD_INTERVAL": "2.5"}).reload_interval == 2.5


def test_without_mlflow_installed_the_message_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['mlflow'] = None\n"  # as if the [mlflow] extra were missing
        "from exasol_mlflow_server.cli import main\n"
        "sys.exit(main(['serve', 'models:/clf@champion', '--port', '0']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EMS_CACHE_DIR": str(tmp_path)},
        check=False,
    )
    assert proc.returncode != 0
    assert "pip install 'exasol-mlflow-server[mlflow]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not Path(tmp_path, "mlflow").exists()


@pytest.mark.parametrize("uri", ["models:/clf/1", "models:/clf@champion", "runs:/abc/model"])
def test_unreachable_tracking_server_at_start_is_a_clear_error(uri, tmp_path):
    from tests.serverproc import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "exasol_mlflow_server", "serve", uri, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "EMS_CACHE_DIR": str(tmp_path), "MLFLOW_TRACKING_URI": dead},
        check=False,
    )
    assert proc.returncode != 0
    assert f"cannot reach the MLflow tracking server {dead}" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
