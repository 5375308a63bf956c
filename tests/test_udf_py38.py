"""The generated Python runs on Python 3.8 (Exasol 7.1.0-7.1.29): every body -- the library and
the SET and SCALAR scripts of every task, with every option that changes the code -- passes
``vermin -t=3.8-`` and parses with Python 3.8's grammar, and it runs a query under each Python
interpreter found (``python3.8`` on PATH or ``EMS_PYTHON38``; skipped with a reason if none)."""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exasol_mlflow_server.udf.spec import TASK_SPECS
from tests.exasol_runtime import parse_scripts
from tests.test_udf_helpers import Stub, fake_model_dir, json_answer, make_sql, model_script

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
VARIANTS: list[dict[str, Any]] = [
    {},
    {"key_only": True},
    {"param_columns": ["all"]},
    {"key_type": "VARCHAR(36)", "instances_per_node": 2},
    {"tls_verify": False},
    {"ca_bundle": "PEM"},
    {"ca_bundle_path": "/buckets/bfsdefault/default/ca.pem"},
    {"embedding_format": "columns", "dimension": 4},
]


def all_bodies(tmp_path) -> dict[str, str]:
    pem = tmp_path / "ca.pem"
    pem.write_text(PEM)
    bodies: dict[str, str] = {}
    for task in TASK_SPECS:
        model = fake_model_dir(tmp_path, task, labels=["A", "B"])
        for i, variant in enumerate(VARIANTS):
            if "embedding_format" in variant and task != "feature-extraction":
                continue
            options = {k: (str(pem) if v == "PEM" else v) for k, v in variant.items()}
            for name, script in parse_scripts(make_sql(model, **options)).items():
                bodies.setdefault(script.body, f"{task}-{i}-{name}")
    return {name: body for body, name in bodies.items()}


def vermin(paths: list[str]) -> subprocess.CompletedProcess:
    run_vermin = "import sys; from vermin import main; sys.exit(main())"
    cmd = [sys.executable, "-c", run_vermin, "-t=3.8-", "--eval-annotations", "--violations"]
    cmd += ["--feature", "union-types"]
    return subprocess.run([*cmd, "--no-tips", *paths], capture_output=True, text=True, timeout=120)


def test_every_generated_body_is_python_38(tmp_path) -> None:
    bodies = all_bodies(tmp_path)
    assert len(bodies) > 6 * 3  # the library, and SET and SCALAR scripts of every variant
    paths = []
    for name, body in bodies.items():
        ast.parse(body, filename=name, feature_version=(3, 8))  # 3.8's grammar
        compile(body, name, "exec")
        path = tmp_path / f"{name.replace('.', '_')}.py"
        path.write_text(body)
        paths.append(str(path))
    done = vermin(paths)
    assert done.returncode == 0 and "Minimum required versions" in done.stdout, (
        done.stdout + done.stderr
    )


def test_the_checks_catch_newer_python(tmp_path) -> None:
    """The same checks fail on what Python 3.8 cannot run (they are not vacuous)."""
    newer = {
        "zip_strict": "pairs = list(zip([1], [2], strict=True))\n",
        "pep604": "def f(x: str | None) -> None:\n    pass\n",
        "pep585": "NAMES: dict[str, int] = {}\n",
        "removesuffix": "name = 'a/invocations'.removesuffix('/invocations')\n",
    }
    for name, code in newer.items():
        path = tmp_path / f"{name}.py"
        path.write_text(code)
        done = vermin([str(path)])
        assert done.returncode == 1 and "Target versions not met:   3.8-" in done.stdout, name
    with pytest.raises(SyntaxError):
        ast.parse("match x:\n    case 1:\n        pass\n", feature_version=(3, 8))


# ---------------------------------------------------------------------------------------------
# a query under a real interpreter: a minimal exa/ctx in Python 3.8 syntax, the library and a
# SET script from the generated SQL, against a loopback stub
# ---------------------------------------------------------------------------------------------
DRIVER = r"""
import json, sys, types
job = json.load(sys.stdin)

class Conn:
    def __init__(self, address):
        self.type, self.address, self.user, self.password = "password", address, "", "tok"

class Exa:
    def __init__(self):
        self.meta = types.SimpleNamespace(script_schema="ML", script_name="X", vm_id="1")
        self.modules = {}
    def get_connection(self, name):
        return Conn(job["url"])
    def import_script(self, name):
        if name not in self.modules:
            module = types.ModuleType(name)
            module.__dict__["exa"] = self
            exec(compile(job["library"], name, "exec"), module.__dict__)
            self.modules[name] = module
        return self.modules[name]

class Ctx:
    def __init__(self, rows, names):
        self.rows, self.names, self.pos, self.out = rows, names, 0, []
    def size(self):
        return len(self.rows)
    def next(self):
        self.pos += 1
        return self.pos < len(self.rows)
    def __getattr__(self, name):
        return self.rows[self.pos][self.names.index(name)]
    def emit(self, *values):
        self.out.append(list(values))

namespace = {"exa": Exa()}
exec(compile(job["script"], "script", "exec"), namespace)
ctx = Ctx(job["rows"], job["names"])
namespace["run"](ctx)
namespace["cleanup"]()
print(json.dumps({"version": list(sys.version_info[:2]), "out": ctx.out}))
"""


PYENV_38 = os.path.expanduser("~/.pyenv/versions/3.8*/bin/python3.8")
VENV_38 = str(Path(__file__).resolve().parent.parent / ".cache" / "py38" / "bin" / "python")


def python38() -> str | None:
    """EMS_PYTHON38, else .cache/py38 (a venv with requests), else a pyenv 3.8 (this project's
    machines have one, without requests), else python3.8 on PATH."""
    found = sorted(glob.glob(PYENV_38))
    candidates = [os.environ.get("EMS_PYTHON38"), VENV_38, *found, "python3.8"]
    for candidate in filter(None, candidates):
        path = shutil.which(candidate)
        check = [path or "", "-c", "import sys; assert sys.version_info[:2] == (3, 8)"]
        if path and subprocess.run(check, capture_output=True, timeout=30).returncode == 0:
            return path
    return None


PY38 = python38()


def interpreters() -> list[Any]:
    reason = "no Python 3.8 interpreter here: put python3.8 on PATH or set EMS_PYTHON38"
    return [
        pytest.param(sys.executable, id="this-python"),
        pytest.param(PY38, id="3.8", marks=pytest.mark.skipif(PY38 is None, reason=reason)),
    ]


@pytest.mark.parametrize("python", interpreters())
def test_a_query_runs_under_the_interpreter(tmp_path, python: str) -> None:
    if subprocess.run([python, "-c", "import requests"], capture_output=True).returncode:
        pytest.skip(
            f"{python} has no requests: `{python} -m venv .cache/py38 && .cache/py38/bin/pip "
            "install requests`, then EMS_PYTHON38=.cache/py38/bin/python"
        )
    sql = make_sql(fake_model_dir(tmp_path, "text-classification"), batch_size=2, retries=0)
    scripts = parse_scripts(sql)
    script = scripts[model_script(sql)]

    def decide(n: int, body: bytes, headers: dict[str, str]) -> Any:
        rows = json.loads(body)["dataframe_split"]["data"]
        return json_answer(
            200, {"predictions": [{"label": t.upper(), "score": 0.5} for (t,) in rows]}
        )

    rows = [[2**53 + 1, "a"], [None, "b"], [3, None]]
    with Stub(decide=decide) as stub:
        job = {
            "url": stub.url,
            "library": scripts["ML.EMS_CLIENT"].body,
            "script": script.body,
            "rows": rows,
            "names": [n for n, _ in script.inputs],
        }
        done = subprocess.run(
            [python, "-c", DRIVER],
            input=json.dumps(job),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    if python == PY38:
        assert result["version"] == [3, 8]
    assert result["out"] == [
        [2**53 + 1, "a", "A", 0.5, 1, None],
        [None, "b", "B", 0.5, 1, None],
        [3, None, None, None, None, "input is NULL: text_data"],
    ]
