"""One settings object: CLI flags > EMS_* variables > MLflow's variables > defaults."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
from exasol_mlflow_server.runtime.settings import (
    OPTIONS,
    SERVE_OPTIONS,
    Settings,
    add_arguments,
    from_sources,
    markdown_table,
)

from exasol_mlflow_server.settings import SettingsError


def parse(argv, env):
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return from_sources(parser.parse_args(argv), env)


def test_defaults():
    s = parse([], {})
    assert s == Settings() and s.host == "127.0.0.1" and s.port == 5000


def test_env_then_cli_precedence():
    env = {
        "EMS_PORT": "6000",
        "MLFLOW_PORT": "7000",
        "EMS_LABEL_ONLY": "true",
        "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "9",
    }
    s = parse([], env)
    assert s.port == 6000 and s.label_only is True and s.request_timeout == 9.0
    s = parse(["--port", "5001", "--label-only", "false"], env)
    assert s.port == 5001 and s.label_only is False
    assert parse([], {"MLFLOW_PORT": "7000", "MLFLOW_MODELS_WORKERS": "3"}).workers == 3


def test_mlflow_spelling_of_flags():
    s = parse(["-m", "some/dir", "-h", "0.0.0.0", "-p", "5055", "-w", "2", "-t", "30"], {})
    assert (s.model, s.host, s.port, s.workers, s.request_timeout) == (
        ("some/dir",),
        "0.0.0.0",
        5055,
        2,
        30.0,
    )
    assert parse(["positional/dir"], {}).model == ("positional/dir",)


def test_bad_env_values_are_clear():
    with pytest.raises(SettingsError, match="EMS_PORT"):
        parse([], {"EMS_PORT": "abc"})
    with pytest.raises(ValueError, match="EMS_DEVICE"):
        parse([], {"EMS_DEVICE": "tpu"})


def test_token_file(tmp_path):
    f = tmp_path / "tok"
    f.write_text("s3cret\n")
    assert Settings(token_file=str(f)).bearer_token() == "s3cret"
    f.write_text("")
    with pytest.raises(ValueError, match="empty"):
        Settings(token_file=str(f)).bearer_token()


def test_help_documents_every_flag_and_variable():
    out = subprocess.run(
        [sys.executable, "-m", "exasol_mlflow_server", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for opt in OPTIONS:
        assert opt.flags[0] in out and SERVE_OPTIONS.env_var(opt) in out
    table = markdown_table()
    assert all(SERVE_OPTIONS.env_var(opt) in table for opt in OPTIONS)


def test_readme_settings_table_is_current():
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown_table() in readme, "run: python scripts/update_readme.py"


def test_defaults_are_declared_once_in_the_dataclass():
    import dataclasses

    for f in dataclasses.fields(Settings):
        opt = SERVE_OPTIONS.by_name(f.name)
        assert SERVE_OPTIONS.default(opt.name) == f.default
    assert {o.name for o in OPTIONS} == {f.name for f in dataclasses.fields(Settings)}


def test_port_env_for_knative_has_the_lowest_precedence():
    assert parse([], {"PORT": "8080"}).port == 8080
    assert parse([], {"PORT": "8080", "EMS_PORT": "9000"}).port == 9000


def test_every_command_uses_the_one_options_mechanism():
    from exasol_mlflow_server.exporter.settings import EXPORT_OPTIONS, ExportSettings, from_args

    from exasol_mlflow_server.settings import OptionSet
    from exasol_mlflow_server.udf.settings import UDF_OPTIONS, UdfOptions

    assert all(isinstance(o, OptionSet) for o in (SERVE_OPTIONS, EXPORT_OPTIONS, UDF_OPTIONS))
    assert EXPORT_OPTIONS.cls is ExportSettings and UDF_OPTIONS.cls is UdfOptions
    parser = argparse.ArgumentParser(add_help=False)
    EXPORT_OPTIONS.add_arguments(parser)
    s = from_args(parser.parse_args(["some/model", "-o", "out", "--per-tensor"]), {})
    assert (s.model, str(s.output), s.per_channel) == ("some/model", "out", False)
    with pytest.raises(Exception, match="MODEL is required"):
        from_args(parser.parse_args(["-o", "out"]), {})
    udf = UDF_OPTIONS.build(None, {"EMS_UDF_SCHEMA": "ML", "EMS_UDF_BATCH_SIZE": "50"})
    assert (udf.schema, udf.batch_size, udf.connection) == ("ML", 50, "MLFLOW_SERVER")


def test_usable_cpus_follow_affinity_and_the_cgroup_quota(tmp_path):
    from exasol_mlflow_server.runtime import settings as serve_settings

    assert 1 <= serve_settings.available_cpus() <= (os.cpu_count() or 1)
    (tmp_path / "cpu.max").write_text("250000 100000\n")  # a 2.5-CPU container limit
    assert serve_settings._cgroup_cpu_quota(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert serve_settings._cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert serve_settings._cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("400000")
    assert serve_settings._cgroup_cpu_quota(tmp_path) == 4.0
