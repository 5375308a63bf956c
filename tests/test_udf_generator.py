"""`exasol-mlflow-server udf`: the generated SQL per task and the command line."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

import pytest

from exasol_mlflow_server.cli import main
from exasol_mlflow_server.udf.model_info import UdfError
from tests.test_udf_helpers import fake_model_dir, make_sql, parse_scripts

OUTPUTS = {
    "feature-extraction": ["embedding"],
    "text-classification": ["label", "score"],
    "token-classification": ["start_pos", "end_pos", "word", "entity", "score"],
    "question-answering": ["answer", "score", "start_pos", "end_pos"],
    "zero-shot-classification": ["label", "score", "rank"],
    "fill-mask": ["filled_text", "token_str", "score", "rank"],
}
INPUTS = {
    "question-answering": ["question", "context_text"],
    "zero-shot-classification": ["text_data", "candidate_labels"],
}


def settings_of(body: str) -> dict:
    start = body.index("SETTINGS: dict[str, Any] = ") + len("SETTINGS: dict[str, Any] = ")
    return ast.literal_eval(body[start : body.index("\n}", start) + 2])


@pytest.mark.parametrize("task", list(OUTPUTS))
def test_sql_per_task(tmp_path, task: str) -> None:
    model = fake_model_dir(tmp_path, task, labels=["A", "B"])
    sql = make_sql(model, schema="ML", connection="MODEL_SRV", batch_size=64, retries=2)
    name = task.upper().replace("-", "_")
    assert "CREATE OR REPLACE CONNECTION MODEL_SRV\n" in sql
    assert "IDENTIFIED BY '<token>';" in sql
    assert f"GRANT ACCESS ON CONNECTION MODEL_SRV FOR SCRIPT ML.{name} TO PUBLIC;" in sql
    assert f"GRANT ACCESS ON CONNECTION MODEL_SRV FOR SCRIPT ML.{name}_SCALAR TO PUBLIC;" in sql
    assert "GROUP BY IPROC(), MOD(id, 4)" in sql
    assert "%perNodeAndCallInstanceLimit" not in sql.split("-- 5. Examples")[0]
    scripts = parse_scripts(sql)
    inputs = INPUTS.get(task, ["text_data"])
    set_script, scalar = scripts["SET"], scripts["SCALAR"]
    assert (set_script.schema, set_script.name, scalar.name) == ("ML", name, f"{name}_SCALAR")
    assert [c for c, _ in set_script.inputs] == ["id", *inputs]
    assert [c for c, _ in set_script.outputs] == ["id", *inputs, *OUTPUTS[task], "error_message"]
    assert set_script.outputs[-1] == ("error_message", "VARCHAR(2000000)")
    assert [c for c, _ in scalar.inputs] == inputs
    assert scalar.outputs == [("RETURN", "VARCHAR(2000000)")]
    for script in (set_script, scalar):
        compile(script.body, script.name, "exec")
        settings = settings_of(script.body)
        assert settings["task"] == task and settings["connection"] == "MODEL_SRV"
        assert settings["batch_size"] == 64 and settings["retries"] == 2
        assert settings["n_outputs"] == len(OUTPUTS[task])
        assert "ctx.get_dataframe(num_rows=BATCH_SIZE)" in script.body
    assert settings_of(set_script.body)["mode"] == "set"
    assert settings_of(scalar.body)["mode"] == "scalar"


def test_instance_limit_params_and_names(tmp_path) -> None:
    model = fake_model_dir(tmp_path, "token-classification", labels=["O", "B-PER"])
    sql = make_sql(
        model,
        schema="S1",
        name="ner",
        instances_per_node=3,
        params={"aggregation_strategy": "max"},
        url="http://ml1:5000,http://ml2:5000",
        grant_to="ANALYSTS",
    )
    scripts = parse_scripts(sql)
    assert scripts["SET"].name == "NER" and scripts["SCALAR"].name == "NER_SCALAR"
    assert scripts["SET"].options == ["%perNodeAndCallInstanceLimit 3;"]
    assert scripts["SCALAR"].options == ["%perNodeAndCallInstanceLimit 3;"]
    assert settings_of(scripts["SET"].body)["params"] == {"aggregation_strategy": "max"}
    assert "TO 'http://ml1:5000,http://ml2:5000'" in sql
    assert "FOR SCRIPT S1.NER TO ANALYSTS;" in sql
    assert "GROUP BY IPROC(), MOD(id, 3)" in sql
    default = parse_scripts(make_sql(model))["SET"]
    assert settings_of(default.body)["params"] == {"aggregation_strategy": "simple"}


def test_varchar_key(tmp_path) -> None:
    model = fake_model_dir(tmp_path, "text-classification")
    sql = make_sql(model, key_column="doc_id", key_type="VARCHAR(36)")
    script = parse_scripts(sql)["SET"]
    assert script.inputs[0] == ("doc_id", "VARCHAR(36)")
    assert settings_of(script.body)["key_kind"] == "any"
    assert "GROUP BY IPROC(), FLOOR(RANDOM(0, 4))" in sql


def test_embedding_columns(tmp_path) -> None:
    model = fake_model_dir(tmp_path, "feature-extraction")
    (model / "config.json").write_text(json.dumps({"hidden_size": 8}))
    script = parse_scripts(make_sql(model, embedding_format="columns"))["SET"]
    assert [c for c, _ in script.outputs[2:-1]] == [f"DIM_{i}" for i in range(8)]
    assert {t for _, t in script.outputs[2:-1]} == {"DOUBLE"}
    settings = settings_of(script.body)
    assert settings["embedding_format"] == "columns" and settings["dimension"] == 8
    assert "Embedding dimension: 8" in make_sql(model)
    (model / "config.json").unlink()
    with pytest.raises(UdfError, match="--dimension"):
        make_sql(model, embedding_format="columns")
    script = parse_scripts(make_sql(model, embedding_format="columns", dimension=3))["SET"]
    assert len(script.outputs) == 2 + 3 + 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schema": "my-schema"}, "--schema"),
        ({"connection": "a b"}, "--connection"),
        ({"key_column": "text"}, "reserved"),
        ({"key_column": "text_data"}, "clashes"),
        ({"batch_size": 0}, "--batch-size"),
        ({"timeout": 0}, "--timeout"),
        ({"key_type": "VARCHAR(10); DROP"}, "--key-type"),
        ({"embedding_format": "csv"}, "--embedding-format"),
    ],
)
def test_invalid_options(tmp_path, options: dict, message: str) -> None:
    model = fake_model_dir(tmp_path, "text-classification")
    with pytest.raises(UdfError, match=message):
        make_sql(model, **options)


def test_url_literal_is_escaped(tmp_path) -> None:
    sql = make_sql(fake_model_dir(tmp_path, "fill-mask"), url="http://h:1/?a='b'")
    assert "TO 'http://h:1/?a=''b'''" in sql


def test_cli_writes_sql(tmp_path, capsys) -> None:
    model = fake_model_dir(tmp_path, "zero-shot-classification", labels=["c", "n", "e"])
    out = tmp_path / "udf.sql"
    code = main(["udf", str(model), "--schema", "ML", "--output", str(out), "--params", "{}"])
    assert code == 0 and capsys.readouterr().out == ""
    assert "CREATE OR REPLACE PYTHON3 SET SCRIPT ML.ZERO_SHOT_CLASSIFICATION(" in out.read_text()
    assert main(["udf", str(model), "--schema", "ML", "--batch-size", "7"]) == 0
    printed = capsys.readouterr().out
    assert "'batch_size': 7" in printed and printed.rstrip().endswith("LIMIT 10;")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/model"], "does not exist"),
        (["EMPTY"], "no exasol_model.json"),
        (["MODEL", "--params", "{bad"], "--params: not valid JSON"),
        (["MODEL", "--params", "[1]"], "--params: must be a JSON object"),
        (["MODEL", "--instances-per-node", "0"], "--instances-per-node"),
    ],
)
def test_cli_errors_are_clear(tmp_path, capsys, args: list[str], message: str) -> None:
    model = fake_model_dir(tmp_path, "fill-mask")
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = [{"EMPTY": str(empty), "MODEL": str(model)}.get(a, a) for a in args]
    assert main(["udf", *argv, "--schema", "ML"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("exasol-mlflow-server udf: error: ") and message in err
    assert "Traceback" not in err


def test_cli_bad_task_in_manifest(tmp_path, capsys) -> None:
    model = fake_model_dir(tmp_path, "fill-mask")
    (model / "exasol_model.json").write_text(json.dumps({"task": "translation"}))
    assert main(["udf", str(model), "--schema", "ML"]) == 2
    assert "unsupported task 'translation'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_subprocess_on_a_real_export(export_dir, tmp_path) -> None:
    model = export_dir("text-classification")
    cmd = [sys.executable, "-m", "exasol_mlflow_server", "udf", str(model), "--schema", "S"]
    done = subprocess.run([*cmd, "--connection", "C1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "CREATE OR REPLACE CONNECTION C1" in done.stdout
    assert "CREATE OR REPLACE PYTHON3 SET SCRIPT S.TEXT_CLASSIFICATION(" in done.stdout
    assert "CREATE OR REPLACE PYTHON3 SCALAR SCRIPT S.TEXT_CLASSIFICATION_SCALAR(" in done.stdout
    labels = json.loads((model / "exasol_model.json").read_text())["labels"]
    assert f"-- Labels: {', '.join(labels)}" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "exasol_mlflow_server", "udf", str(tmp_path), "--schema", "S"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "not an exported model directory" in bad.stderr
    missing = subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "--schema" in missing.stderr
