"""`exasol-mlflow-server udf`: the generated SQL per task and option, and the command line."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exasol_mlflow_server.cli import main
from exasol_mlflow_server.udf.model_info import UdfError
from tests.exasol_runtime import parse_scripts
from tests.test_udf_helpers import fake_model_dir, make_sql, model_script

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = {
    "feature-extraction": ["embedding"],
    "text-classification": ["label", "score", "rank"],
    "token-classification": ["start_pos", "end_pos", "word", "entity", "score"],
    "question-answering": ["answer", "score", "start_pos", "end_pos", "rank"],
    "zero-shot-classification": ["label", "score", "rank"],
    "fill-mask": ["filled_text", "token_str", "score", "rank"],
}
INPUTS = {
    "question-answering": ["question", "context_text"],
    "zero-shot-classification": ["text_data", "candidate_labels"],
}


def settings_of(body: str) -> dict:
    start = body.index("SETTINGS = ") + len("SETTINGS = ")
    return ast.literal_eval(body[start : body.index("\n}", start) + 2])


def scripts_of(sql: str) -> tuple:
    scripts = parse_scripts(sql)
    return scripts[model_script(sql, "SET")], scripts[model_script(sql, "SCALAR")], scripts


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
    assert "%perNodeAndCallInstanceLimit" not in sql.split("-- 6. Examples")[0]
    set_script, scalar, scripts = scripts_of(sql)
    assert set(scripts) == {"ML.EMS_CLIENT", f"ML.{name}", f"ML.{name}_SCALAR"}
    assert sql.count("\n--/\n") == 3 and sql.count("\n/\n") == 3  # every script delimited
    inputs = INPUTS.get(task, ["text_data"])
    assert [c for c, _ in set_script.inputs] == ["id", *inputs]
    assert [c for c, _ in set_script.outputs] == ["id", *inputs, *OUTPUTS[task], "error_message"]
    assert set_script.outputs[-1] == ("error_message", "VARCHAR(2000000)")
    assert [c for c, _ in scalar.inputs] == inputs
    assert scalar.outputs == [("RETURN", "VARCHAR(2000000)")]
    for script in (set_script, scalar):
        settings = settings_of(script.body)
        assert settings["task"] == task and settings["connection"] == "MODEL_SRV"
        assert settings["retries"] == 2
        assert "exa.import_script(LIBRARY)" in script.body and "'ML.EMS_CLIENT', 1" in script.body
        assert len(script.body.splitlines()) < 45, "a model script is its settings and a call"
    assert settings_of(set_script.body)["batch_rows"] == 64
    assert [o[0] for o in settings_of(set_script.body)["outputs"]] == OUTPUTS[task]
    assert settings_of(set_script.body)["mode"] == "set"
    assert settings_of(scalar.body)["mode"] == "scalar"


def test_library_version_matches_the_generator() -> None:
    from exasol_mlflow_server.udf.generator import API_VERSION, library_code

    code = library_code()
    assert f"\nAPI_VERSION = {API_VERSION}  #" in code
    assert "from ems_http import" not in code  # the parts are one module
    namespace: dict = {}
    exec(compile(code, "EMS_CLIENT", "exec"), namespace)
    assert namespace["API_VERSION"] == API_VERSION and callable(namespace["Udf"])


def test_sql_size_of_one_classifier(tmp_path, capsys) -> None:
    """The SQL for one model is short; the library is shared by every model of the schema."""
    model = fake_model_dir(tmp_path, "text-classification", labels=["NEG", "POS"])
    full = make_sql(model).splitlines()
    model_only = make_sql(model, no_library=True).splitlines()
    library = make_sql(model, library_only=True).splitlines()
    with capsys.disabled():
        print(
            f"\nSQL lines for one classifier: {len(full)} with the library, {len(model_only)} "
            f"without (--no-library), library alone {len(library)} (--library-only)"
        )
    assert len(model_only) < 160
    assert "CREATE OR REPLACE PYTHON3 SCALAR SCRIPT ML.EMS_CLIENT() RETURNS INT AS" in library
    assert not any("EMS_CLIENT() RETURNS" in line for line in model_only)
    assert not any(line.startswith("CREATE OR REPLACE CONNECTION") for line in library)


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
        library="LIBS.CLIENT",
    )
    set_script, scalar, scripts = scripts_of(sql)
    assert set_script.name == "NER" and scalar.name == "NER_SCALAR" and "LIBS.CLIENT" in scripts
    assert set_script.options == scalar.options == ["%perNodeAndCallInstanceLimit 3;"]
    assert scripts["LIBS.CLIENT"].options == []
    assert settings_of(set_script.body)["params"] == {"aggregation_strategy": "max"}
    assert "'LIBS.CLIENT', 1" in set_script.body
    assert "TO 'http://ml1:5000,http://ml2:5000'" in sql
    assert "FOR SCRIPT S1.NER TO ANALYSTS;" in sql
    assert "GROUP BY IPROC(), MOD(id, 3)" in sql
    default = scripts_of(make_sql(model))[0]
    assert settings_of(default.body)["params"] == {"aggregation_strategy": "simple"}


def test_varchar_key(tmp_path) -> None:
    model = fake_model_dir(tmp_path, "text-classification")
    sql = make_sql(model, key_column="doc_id", key_type="VARCHAR(36)")
    assert scripts_of(sql)[0].inputs[0] == ("doc_id", "VARCHAR(36)")
    assert "GROUP BY IPROC(), FLOOR(RANDOM(0, 4))" in sql


def test_param_columns_and_key_only(tmp_path) -> None:
    fill = fake_model_dir(tmp_path, "fill-mask")
    set_script, scalar, _ = scripts_of(make_sql(fill, param_columns=["all"], key_only=True))
    assert set_script.inputs == [
        ("id", "DECIMAL(18,0)"),
        ("text_data", "VARCHAR(2000000)"),
        ("top_k", "DECIMAL(9,0)"),
    ]
    assert [c for c, _ in set_script.outputs] == [
        "id",
        "token_str",
        "score",
        "rank",
        "error_message",
    ]
    assert [c for c, _ in scalar.inputs] == ["text_data", "top_k"]
    assert settings_of(scalar.body)["outputs"][0][0] == "filled_text"
    qa = fake_model_dir(tmp_path, "question-answering")
    set_script = scripts_of(make_sql(qa, param_columns=["top_k", "handle_impossible_answer"]))[0]
    assert set_script.inputs[-2:] == [
        ("top_k", "DECIMAL(9,0)"),
        ("handle_impossible_answer", "BOOLEAN"),
    ]
    assert settings_of(set_script.body)["param_columns"][-1] == [
        "handle_impossible_answer", "handle_impossible_answer", "bool",
    ]  # fmt: skip
    zero = scripts_of(
        make_sql(fake_model_dir(tmp_path, "zero-shot-classification"), param_columns=["all"])
    )
    assert [c for c, _ in zero[0].inputs] == [
        "id", "text_data", "candidate_labels", "hypothesis_template", "multi_label",
    ]  # fmt: skip


def test_embedding_columns(tmp_path) -> None:
    model = fake_model_dir(tmp_path, "feature-extraction")
    (model / "config.json").write_text(json.dumps({"hidden_size": 8}))
    set_script = scripts_of(make_sql(model, embedding_format="columns"))[0]
    assert [c for c, _ in set_script.outputs[2:-1]] == [f"DIM_{i}" for i in range(8)]
    assert {t for _, t in set_script.outputs[2:-1]} == {"DOUBLE"}
    assert settings_of(set_script.body)["dimension"] == 8
    assert "Embedding dimension: 8" in make_sql(model)
    (model / "config.json").unlink()
    with pytest.raises(UdfError, match="--dimension"):
        make_sql(model, embedding_format="columns")
    set_script = scripts_of(make_sql(model, embedding_format="columns", dimension=3))[0]
    assert len(set_script.outputs) == 2 + 3 + 1


def test_ca_bundle_is_embedded_or_referenced(tmp_path) -> None:
    model = fake_model_dir(tmp_path, "text-classification")
    pem = tmp_path / "ca.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    settings = settings_of(scripts_of(make_sql(model, ca_bundle=str(pem)))[0].body)
    assert settings["ca_pem"] == pem.read_text() and settings["tls_verify"] is True
    path = "/buckets/bfsdefault/default/ca.pem"
    settings = settings_of(scripts_of(make_sql(model, ca_bundle_path=path))[1].body)
    assert settings["ca_path"] == path and settings["ca_pem"] is None
    assert settings_of(scripts_of(make_sql(model, tls_verify=False))[0].body)["tls_verify"] is False


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"schema": "my-schema"}, "--schema"),
        ({"connection": "a b"}, "--connection"),
        ({"key_column": "text"}, "reserved"),
        ({"key_column": "text_data"}, "clashes with the input column text_data"),
        ({"key_column": "SCORE"}, "clashes with the output column score"),
        ({"key_column": "Label"}, "clashes with the output column label"),
        ({"key_column": "rank"}, "clashes with the output column rank"),
        ({"key_column": "error_message"}, "clashes with the output column error_message"),
        ({"key_column": "top_k", "param_columns": ["top_k"]}, "clashes with the input column"),
        ({"key_column": "size"}, "method of Exasol's UDF context"),
        ({"param_columns": ["top_p"]}, "has no per-row parameter top_p"),
        ({"name": "EMS_CLIENT"}, "name of the client library"),
        ({"batch_size": 0}, "--batch-size"),
        ({"max_batch_bytes": 10}, "--max-batch-bytes"),
        ({"timeout": 0}, "--timeout"),
        ({"key_type": "VARCHAR(10); DROP"}, "--key-type"),
        ({"embedding_format": "csv"}, "--embedding-format"),
        ({"library_only": True, "no_library": True}, "exclude each other"),
        ({"ca_bundle": "/nonexistent.pem"}, "cannot read"),
        ({"ca_bundle_path": "/b/ca.pem", "tls_verify": False}, "exclude each other"),
        ({"library": "a.b.c"}, "--library"),
    ],
)
def test_invalid_options(tmp_path, options: dict, message: str) -> None:
    model = fake_model_dir(tmp_path, "text-classification")
    with pytest.raises(UdfError, match=re.escape(message)):
        make_sql(model, **options)


def test_key_clashes_with_embedding_columns(tmp_path) -> None:
    model = fake_model_dir(tmp_path, "feature-extraction")
    with pytest.raises(UdfError, match="clashes with the output column DIM_0"):
        make_sql(model, embedding_format="columns", dimension=2, key_column="dim_0")


def test_url_literal_is_escaped(tmp_path) -> None:
    sql = make_sql(fake_model_dir(tmp_path, "fill-mask"), url="http://h:1/?a='b'")
    assert "TO 'http://h:1/?a=''b'''" in sql


def test_options_table_in_the_docs_is_current() -> None:
    from exasol_mlflow_server.udf.settings import UDF_OPTIONS

    docs = (REPO / "docs" / "exasol.md").read_text()
    block = re.search(r"<!-- udf-options:start -->\n(.*?)<!-- udf-options:end -->", docs, re.S)
    assert block, "docs/exasol.md has no udf-options block"
    assert block.group(1).strip() == UDF_OPTIONS.markdown_table(), (
        "regenerate: python -c 'from exasol_mlflow_server.udf.settings import UDF_OPTIONS; "
        "print(UDF_OPTIONS.markdown_table())'"
    )


def test_cli_writes_sql(tmp_path, capsys) -> None:
    model = fake_model_dir(tmp_path, "zero-shot-classification", labels=["c", "n", "e"])
    out = tmp_path / "udf.sql"
    code = main(["udf", str(model), "--schema", "ML", "--output", str(out), "--params", "{}"])
    assert code == 0 and capsys.readouterr().out == ""
    assert "CREATE OR REPLACE PYTHON3 SET SCRIPT ML.ZERO_SHOT_CLASSIFICATION(" in out.read_text()
    argv = ["udf", str(model), "--schema", "ML", "--batch-size", "7", "--param-columns", "all"]
    assert main([*argv, "--key-only"]) == 0
    printed = capsys.readouterr().out
    assert "'batch_rows': 7" in printed and printed.rstrip().endswith("LIMIT 10;")
    assert "'echo': False" in printed and "multi_label BOOLEAN" in printed
    assert main(["udf", str(model), "--schema", "ML", "--library-only"]) == 0
    printed = capsys.readouterr().out
    assert list(parse_scripts(printed)) == ["ML.EMS_CLIENT"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/model"], "does not exist"),
        (["EMPTY"], "no exasol_model.json"),
        (["MODEL", "--params", "{bad"], "--params: not valid JSON"),
        (["MODEL", "--params", "[1]"], "--params: must be a JSON object"),
        (["MODEL", "--instances-per-node", "0"], "--instances-per-node"),
        (["MODEL", "--key-only", "maybe"], "--key-only: not a boolean"),
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
    (model / "exasol_model.json").write_text(json.dumps({"task": "image-segmentation"}))
    assert main(["udf", str(model), "--schema", "ML"]) == 2
    assert "unsupported task 'image-segmentation'" in capsys.readouterr().err


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
