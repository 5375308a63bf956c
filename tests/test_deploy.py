"""The container image, Kubernetes and KServe manifests and the compose file, checked against the app.

Manifests are rendered with ``kubectl kustomize`` and validated with kubernetes-validate against a
pinned Kubernetes version (KServe's custom resources have no schema there: they are checked
structurally, their containers as part of a Pod); the Dockerfile is linted with hadolint. Then
every probe path, port, environment variable and the shutdown budget they name is checked
against the real Falcon app and the real settings table (runtime/settings.py). Seconds, no
cluster, no Docker.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import falcon.testing
import kubernetes_validate
import pytest
import yaml
from exasol_mlflow_server.runtime.http.app import create_app
from exasol_mlflow_server.runtime.metrics import Metrics
from exasol_mlflow_server.runtime.settings import (
    SERVE_OPTIONS,
    Settings,
    add_arguments,
    from_sources,
)
from exasol_mlflow_server.runtime.state import Models, ModelState

from tests.serverproc import free_port

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBERNETES_VERSION = "1.34.0"  # the oldest release we support: preStop `sleep` is GA there
KUSTOMIZATIONS = {
    "base": DEPLOY / "kubernetes" / "base",
    "gpu": DEPLOY / "kubernetes" / "overlays" / "gpu",
    "kserve": DEPLOY / "kserve",
}
KSERVE_GROUP = "serving.kserve.io/"
DEFAULT_GRACE_SECONDS = 30  # Kubernetes' default terminationGracePeriodSeconds
# Dockerfile ENV that are not server options (the interpreter, the NVIDIA toolkit)
IMAGE_ONLY_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "HOME"}
IMAGE_ONLY_ENV |= {"NVIDIA_DRIVER_CAPABILITIES"}
OPTION_ENV = SERVE_OPTIONS.all_env_names()  # EMS_<NAME> and the compatibility variables


def tool(name: str) -> str:
    """Path of a command-line tool; skipped where it is missing, but a failure under CI."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        message = f"{name} is not installed"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (CI is set: it must be)")
        pytest.skip(message)
    return found


# ---- rendering and parsing ---------------------------------------------------------------
@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    kubectl = tool("kubectl")
    out = {}
    for name, path in KUSTOMIZATIONS.items():
        proc = subprocess.run(
            [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"kubectl kustomize {path}:\n{proc.stderr}"
        out[name] = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return out


def one(objects: list[dict], kind: str) -> dict:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            keyword, _, rest = current.strip().partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        current = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_env() -> dict[str, str]:
    """The ENV of the image that runs (the final stage)."""
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(rest):
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def healthcheck_command() -> list[str]:
    (rest,) = [rest for keyword, rest in dockerfile() if keyword == "HEALTHCHECK"]
    return json.loads(rest[rest.index("CMD") + 3 :])


def compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def pod_spec(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]


def containers(rendered: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    """Every server container: the Deployments' and the ServingRuntime's."""
    found = [
        (f"{name}/Deployment", c)
        for name in ("base", "gpu")
        for c in pod_spec(one(rendered[name], "Deployment"))["containers"]
    ]
    runtime = one(rendered["kserve"], "ServingRuntime")
    found += [("kserve/ServingRuntime", c) for c in runtime["spec"]["containers"]]
    return found


def literal_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def server_settings(container: dict) -> Settings:
    """The settings `serve` starts with in this container: image ENV, container env, args."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    args = parser.parse_args(container.get("args", []))
    return from_sources(args, {**image_env(), **literal_env(container)})


def no_model_client(token: str | None = None) -> falcon.testing.TestClient:
    settings = Settings(token=token)
    return falcon.testing.TestClient(create_app(settings, Models([ModelState()]), Metrics()))


def probes(container: dict) -> dict[str, dict]:
    return {
        kind: container[kind]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe")
        if kind in container
    }


# ---- schema validation ---------------------------------------------------------------------
def test_every_core_object_validates_against_the_pinned_kubernetes(rendered):
    kinds = set()
    for name in ("base", "gpu"):
        for obj in rendered[name]:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
            kinds.add(obj["kind"])
    assert kinds == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
    }


def test_the_validator_rejects_a_broken_deployment(rendered):
    broken = json.loads(json.dumps(one(rendered["base"], "Deployment")))
    pod_spec(broken)["containers"][0]["livenessProbe"]["httpGet"]["paht"] = "/typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_kserve_objects_are_custom_resources_checked_by_hand(rendered):
    for obj in rendered["kserve"]:
        assert obj["apiVersion"].startswith(KSERVE_GROUP)
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # only warned by the tool
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    runtime = one(rendered["kserve"], "ServingRuntime")
    service = one(rendered["kserve"], "InferenceService")
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    spec = runtime["spec"]
    formats = {f["name"]: f for f in spec["supportedModelFormats"]}
    assert "exasol-onnx" in formats and formats["exasol-onnx"]["autoSelect"] is True
    assert spec["protocolVersions"] == ["v2"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"  # the name KServe gives a predictor
    assert server_settings(container).model == ("{{.Name}}=/mnt/models",)  # the isvc's name
    # the runtime's container is an ordinary container: validate it inside a Pod
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "exasol-onnx"},
        "spec": {"containers": spec["containers"]},
    }
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)

    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] in formats
    assert model["modelFormat"]["version"] == formats[model["modelFormat"]["name"]]["version"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in spec["protocolVersions"]
    assert re.match(r"^(s3|gs|pvc|https?|hdfs|oci)://\S+$", model["storageUri"])
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] in (
        "Standard",
        "Serverless",
    )
    assert 1 <= predictor["minReplicas"] <= predictor["maxReplicas"]


# ---- consistency with the app --------------------------------------------------------------
def probe_paths(rendered) -> dict[str, set[str]]:
    """path -> the probe kinds that use it, over every manifest and the image's health check."""
    paths: dict[str, set[str]] = {}
    for _, container in containers(rendered):
        for kind, probe in probes(container).items():
            paths.setdefault(probe["httpGet"]["path"], set()).add(kind)
    paths.setdefault(healthcheck_command()[-1], set()).add("HEALTHCHECK")
    return paths


def test_every_probe_path_is_a_route_of_the_app(rendered):
    client = no_model_client()
    paths = probe_paths(rendered)
    assert {"/v2/health/live", "/v2/health/ready"} <= set(paths)
    for path, kinds in paths.items():
        status = client.simulate_get(path).status_code
        assert status not in (404, 405), f"{path} ({', '.join(sorted(kinds))}) answers {status}"
        if "livenessProbe" in kinds:  # live while the model loads, or pods restart forever
            assert status == 200, f"liveness {path} answers {status} while no model is loaded"
        if kinds & {"readinessProbe", "startupProbe"}:  # no traffic before the model is warm
            assert status == 503, f"readiness {path} answers {status} while no model is loaded"


def test_probes_need_no_token(rendered):
    """The kubelet sends no Authorization header: probe paths stay open when auth is on."""
    client = no_model_client(token="s3cret")
    assert client.simulate_post("/invocations", json={"inputs": ["x"]}).status_code == 401
    for path in probe_paths(rendered):
        assert client.simulate_get(path).status_code != 401, path


def test_container_ports_are_the_ports_the_server_listens_on(rendered):
    for where, container in containers(rendered):
        (port,) = container["ports"]
        settings = server_settings(container)
        assert settings.port == port["containerPort"], where
        assert settings.host == "0.0.0.0", where
        for kind, probe in probes(container).items():
            assert probe["httpGet"]["port"] in (port.get("name"), port["containerPort"]), (
                f"{where} {kind}"
            )
    deployment = one(rendered["base"], "Deployment")
    (container,) = pod_spec(deployment)["containers"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    service = one(rendered["base"], "Service")
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    runtime = one(rendered["kserve"], "ServingRuntime")
    (kserve_container,) = runtime["spec"]["containers"]
    assert (
        int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"])
        == kserve_container["ports"][0]["containerPort"]
    )


def test_the_image_listens_on_its_exposed_port_and_honours_port():
    exposed = [int(rest) for keyword, rest in dockerfile() if keyword == "EXPOSE"]
    env = image_env()
    assert exposed == [8080] and env["PORT"] == "8080"
    assert env["EMS_MODEL"] == "/mnt/models" and env["EMS_HOST"] == "0.0.0.0"
    assert from_sources(None, env).port == 8080
    # Knative announces its port in PORT; nothing in the image may shadow it
    assert from_sources(None, {**env, "PORT": "9000"}).port == 9000
    assert from_sources(None, {**env, "PORT": "9000", "EMS_PORT": "8081"}).port == 8081


def test_every_environment_variable_is_a_server_option(rendered):
    sources: list[tuple[str, dict[str, str], set[str]]] = [
        (where, {e["name"]: e.get("value") for e in c.get("env", [])}, set())
        for where, c in containers(rendered)
    ]
    sources.append(("Dockerfile", image_env(), IMAGE_ONLY_ENV))
    sources.append(("docker-compose.yml", compose()["services"]["server"]["environment"], set()))
    for where, env, allowed in sources:
        unknown = sorted(set(env) - set(OPTION_ENV) - allowed)
        assert not unknown, f"{where} sets {unknown}, which no option of `serve` reads"
        values = {k: v for k, v in env.items() if k in OPTION_ENV and v is not None}
        from_sources(None, values)  # every value parses with its option's type and choices


def test_thread_count_follows_the_cpu_limit(rendered):
    """ONNX Runtime sees the node's cores, not the pod's limit: EMS_THREADS says the limit."""
    for where, container in containers(rendered):
        env = {e["name"]: e for e in container["env"]}
        limit = container["resources"]["limits"]["cpu"]
        assert re.fullmatch(r"\d+", str(limit)), f"{where}: whole cores, got {limit}"
        assert env["EMS_WORKERS"]["value"] == "1", where
        threads = env["EMS_THREADS"]
        if "valueFrom" in threads:
            ref = threads["valueFrom"]["resourceFieldRef"]
            assert ref["resource"] == "limits.cpu" and ref["containerName"] == container["name"]
            assert str(ref["divisor"]) == "1"
        else:
            assert threads["value"] == str(limit), where


def drain_timeout(env: dict[str, str]) -> float:
    return from_sources(None, {k: v for k, v in env.items() if k in OPTION_ENV}).drain_timeout


def test_shutdown_budget_covers_prestop_and_drain(rendered):
    """SIGKILL comes terminationGracePeriodSeconds after termination starts, preStop included."""
    for name in ("base", "gpu"):
        spec = pod_spec(one(rendered[name], "Deployment"))
        (container,) = spec["containers"]
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        drain = drain_timeout(literal_env(container))
        grace = spec["terminationGracePeriodSeconds"]
        assert pre_stop >= 5, "endpoints need a few seconds to drop the pod"
        assert grace >= pre_stop + drain + 10, f"{name}: {grace} < {pre_stop} + {drain} + 10"
    # KServe's pods get the default grace period and no preStop hook
    (container,) = one(rendered["kserve"], "ServingRuntime")["spec"]["containers"]
    assert "lifecycle" not in container
    assert drain_timeout(literal_env(container)) + 10 <= DEFAULT_GRACE_SECONDS
    server = compose()["services"]["server"]
    grace = int(re.fullmatch(r"(\d+)s", server["stop_grace_period"]).group(1))
    assert grace >= drain_timeout(server["environment"]) + 10


def test_selectors_match_the_pods(rendered):
    for name in ("base", "gpu"):
        objects = rendered[name]
        deployment = one(objects, "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selectors = {
            "Deployment": deployment["spec"]["selector"]["matchLabels"],
            "Service": one(objects, "Service")["spec"]["selector"],
            "PodDisruptionBudget": one(objects, "PodDisruptionBudget")["spec"]["selector"][
                "matchLabels"
            ],
        }
        for spread in pod_spec(deployment)["topologySpreadConstraints"]:
            selectors["topologySpread"] = spread["labelSelector"]["matchLabels"]
        for kind, selector in selectors.items():
            assert selector.items() <= labels.items(), f"{name} {kind} selects {selector}"
        target = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
        assert one(objects, "Service")["spec"]["sessionAffinity"] == "None"
        volumes = {v["name"]: v for v in pod_spec(deployment)["volumes"]}
        claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
        assert claim == one(objects, "PersistentVolumeClaim")["metadata"]["name"]


def test_pods_run_as_the_image_user_on_a_read_only_root(rendered):
    (user,) = [rest for keyword, rest in dockerfile() if keyword == "USER"]
    uid = int(user.split(":")[0])
    assert uid != 0
    for name in ("base", "gpu"):
        spec = pod_spec(one(rendered[name], "Deployment"))
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == uid
        (container,) = spec["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        # everything the server writes is a writable emptyDir
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        settings = server_settings(container)
        for path in (str(settings.resolved_cache_dir()), "/tmp"):
            assert "emptyDir" in mounts[path], f"{name}: {path} must be an emptyDir"
        (spec,) = settings.model_specs()
        assert mounts[spec.source]["persistentVolumeClaim"]["readOnly"] is True
        token_dir = str(Path(settings.token_file).parent)
        assert "secret" in mounts[token_dir]


def test_the_gpu_overlay_asks_for_a_gpu_the_cuda_image_and_fp16(rendered):
    base = pod_spec(one(rendered["base"], "Deployment"))["containers"][0]
    gpu = pod_spec(one(rendered["gpu"], "Deployment"))
    (container,) = gpu["containers"]
    assert base["image"].endswith("-cpu") and container["image"].endswith("-cuda")
    assert "nvidia.com/gpu" not in base["resources"]["limits"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    settings = server_settings(container)
    assert (settings.device, settings.quantize) == ("cuda", "fp16")
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "tolerations"
    ]
    assert gpu["nodeSelector"]


def test_the_hpa_custom_metric_exists_in_the_metrics_endpoint(rendered):
    """The commented custom-metric option names a metric the server really exports."""
    text = (KUSTOMIZATIONS["base"] / "hpa.yaml").read_text()
    names = re.findall(r"#\s+name: (\w+)", text)
    assert names
    body = no_model_client().simulate_get("/metrics").text
    for name in names:
        assert re.search(rf"^{name}(\{{| )", body, re.M), f"/metrics has no {name}"


# ---- the image -----------------------------------------------------------------------------
def test_hadolint_passes_on_the_dockerfile():
    proc = subprocess.run(
        [tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_flags_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install falcon\nCMD python -m app\n")
    proc = subprocess.run([tool("hadolint"), str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    assert {"DL3006", "DL3013", "DL3025"} <= set(re.findall(r"DL\d{4}", proc.stdout))


def test_the_dockerfile_runs_the_server_as_non_root_in_exec_form():
    instructions = dockerfile()
    (entrypoint,) = [rest for k, rest in instructions if k == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/opt/venv/bin/exasol-mlflow-server", "serve"]
    assert "CMD" not in [k for k, _ in instructions]  # `docker run IMAGE ARGS` go to `serve`
    users = [rest for k, rest in final_stage() if k == "USER"]
    assert users and not users[-1].startswith(("0", "root"))
    command = healthcheck_command()
    assert command[1] == "/usr/local/lib/exasol-mlflow-server/healthcheck.py"
    copied = [rest for k, rest in instructions if k == "COPY" and "healthcheck.py" in rest]
    assert copied == ["deploy/image/healthcheck.py " + command[1]]
    variant = [rest for k, rest in instructions if k == "ARG" and rest.startswith("VARIANT")]
    assert variant and all(v == "VARIANT=cpu" for v in variant)


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "image" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_image_requirements_pick_one_onnxruntime_and_keep_the_rest():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11, as in the image

    requirements = load_script("requirements").requirements
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = pyproject["project"]["dependencies"]
    others = [d for d in deps if not d.startswith("onnxruntime")]
    cpu = requirements(pyproject, "cpu", [])
    cuda = requirements(pyproject, "cuda", ["mlflow"])
    (ort_cpu,) = [r for r in cpu if r.startswith("onnxruntime")]
    (ort_gpu,) = [r for r in cuda if r.startswith("onnxruntime")]
    assert re.fullmatch(r"onnxruntime[<>=!~]=?[\d.]+", ort_cpu)
    assert ort_gpu.startswith("onnxruntime-gpu[cuda,cudnn]")
    assert ort_cpu.removeprefix("onnxruntime") == ort_gpu.removeprefix(
        "onnxruntime-gpu[cuda,cudnn]"
    )
    assert [r for r in cpu if r != ort_cpu] == others
    assert [r for r in cuda if r != ort_gpu] == others + pyproject["project"][
        "optional-dependencies"
    ]["mlflow"]
    with pytest.raises(ValueError, match="unknown variant"):
        requirements(pyproject, "gpu", [])
    with pytest.raises(ValueError, match="unknown extras"):
        requirements(pyproject, "cpu", ["nope"])


@pytest.fixture
def no_model_server():
    import waitress

    server = waitress.create_server(
        create_app(Settings(), Models([ModelState()]), Metrics()),
        host="127.0.0.1",
        port=0,
        threads=2,
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield server.effective_port
    server.close()
    thread.join(timeout=5)


def test_the_health_check_script_follows_the_server_settings(no_model_server):
    script = str(DEPLOY / "image" / "healthcheck.py")
    env = {**os.environ, "EMS_HOST": "0.0.0.0", "EMS_PORT": str(no_model_server)}

    def check(*args: str, **extra: str) -> int:
        return subprocess.run(
            [sys.executable, script, *args], env={**env, **extra}, capture_output=True, timeout=30
        ).returncode

    assert check("/version") == 0
    assert check("/ping") == 1  # 503: no model
    assert check() == 1  # the default path is readiness
    assert check("/version", EMS_PORT="", PORT=str(no_model_server)) == 0
    assert check("/version", EMS_PORT=str(free_port())) == 1  # nothing listens


# ---- compose and docs ----------------------------------------------------------------------
def test_compose_runs_the_image_beside_exasol():
    services = compose()["services"]
    server, exasol = services["server"], services["exasol"]
    assert server["build"]["context"] == "."
    port = from_sources(None, {**image_env(), **server["environment"]}).port
    assert [p.rsplit(":", 1)[1] for p in server["ports"]] == [str(port)]
    assert any(v.endswith(":/mnt/models:ro") for v in server["volumes"])
    assert server["environment"]["EMS_TOKEN_FILE"] == "/run/secrets/ems_token"
    assert server["secrets"] == ["ems_token"]
    assert server["read_only"] is True and "/tmp" in server["tmpfs"]
    assert re.fullmatch(r"exasol/docker-db:\d+\.\d+\.\d+", exasol["image"])
    assert exasol["privileged"] is True


def test_the_readme_links_the_deployment_guide():
    readme = (REPO / "README.md").read_text()
    assert "## Run it as a container or on Kubernetes" in readme
    assert "(docs/deploy.md)" in readme
    guide = (REPO / "docs" / "deploy.md").read_text()
    for path in ("Dockerfile", "docker-compose.yml", "deploy/kubernetes", "deploy/kserve"):
        assert path in guide
