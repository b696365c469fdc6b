"""The files under deploy/ that cannot run here (no Docker engine, no cluster), checked against
what their tools require: Prefect's parsing of prefect.yaml and of the work-pool templates,
docker-py's GPU request, the compose and Kubernetes fields, and that no credential is in them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from genforge.flows.deploy import POOLS, base_job_template, crash_automations, deploy_dir

DEPLOY = deploy_dir()
ROOT = DEPLOY.parent


def placeholders(obj) -> set[str]:
    from prefect.utilities.templating import find_placeholders

    return {p.name for p in find_placeholders(obj)}


def rendered(template: dict, **overrides) -> dict:
    """The job configuration a worker gets: the template filled with the variables' defaults."""
    from prefect.utilities.templating import apply_values

    props = template["variables"]["properties"]
    values = {k: v["default"] for k, v in props.items() if "default" in v}
    values.update(overrides)
    return apply_values(template["job_configuration"], values)


def _builtin_plugins() -> set[str]:
    """Entry points of genforge's own distribution: the built-in plugins."""
    from importlib import metadata

    return {ep.name for ep in metadata.distribution("genforge").entry_points if ep.group == "genforge"}


BUILTIN_PLUGINS = _builtin_plugins()


def test_prefect_yaml_deployments_load_and_their_parameters_validate():
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    from genforge.core.config import load_spec, spec_model
    from genforge.core.plugin_manager import evaluators, get_generator

    doc = yaml.safe_load((DEPLOY / "prefect.yaml").read_text())
    assert doc["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "."}}]
    pool_names = {p.name for p in POOLS.values()}
    names = []
    for dep in doc["deployments"]:
        names.append(dep["name"])
        flow = load_flow_from_entrypoint(dep["entrypoint"])
        flow.validate_parameters(dep["parameters"])  # Prefect's own check of the parameters
        assert dep["work_pool"]["name"] in pool_names
        for sched in dep.get("schedules", []):
            CronSchedule(cron=sched["cron"], timezone=sched.get("timezone"))
        if flow.name == "genforge-pipeline":  # the spec must fit the generator's config
            gen = get_generator(dep["parameters"]["generator"])
            load_spec(spec_model(gen.Config, [ev for _, ev in evaluators(kind=gen.kind)]), base=dep["parameters"]["spec"])
    assert len(names) == len(set(names))
    # every built-in generator has a deployment (an outside plugin's generators are its own business)
    from genforge.core.plugin_manager import registry

    builtin = {name for name, (plugin, _) in registry().generators.items() if plugin in BUILTIN_PLUGINS}
    deployed = {d["parameters"].get("generator") for d in doc["deployments"] if "generator" in d["parameters"]}
    assert builtin and builtin <= deployed


@pytest.mark.parametrize("kind", list(POOLS))
def test_work_pool_templates_parse_as_prefect_requires(kind):
    from prefect.client.schemas.actions import WorkPoolCreate

    spec = POOLS[kind]
    template = base_job_template(spec)
    WorkPoolCreate(name=spec.name, type=spec.type, base_job_template=template)
    variables = template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    for prop in variables["properties"].values():
        if "default" in prop:
            jsonschema.validate(prop["default"], {k: v for k, v in prop.items() if k != "default"})
    # every placeholder in the job configuration is a declared variable
    assert placeholders(template["job_configuration"]) <= set(variables["properties"])
    env = rendered(template)["env"]
    if spec.type == "process":
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"
    else:
        assert env["GENFORGE_GPU_LIMIT"] == "gpu"


def test_docker_pool_requests_the_gpu_in_a_form_docker_accepts():
    import docker

    config = rendered(base_job_template(POOLS["docker-gpu"]))
    kwargs = config["container_create_kwargs"]
    host = docker.types.HostConfig(version="1.44", device_requests=kwargs["device_requests"], shm_size=kwargs["shm_size"])
    assert host["DeviceRequests"] == [{"Driver": "nvidia", "Count": 1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]


def test_kubernetes_pool_job_asks_for_gpu_nodes():
    config = rendered(
        base_job_template(POOLS["kubernetes-gpu"]), gpu_count=2, image="example/genforge:cuda", name="run", namespace="genforge"
    )
    job = config["job_manifest"]
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["spec"]["backoffLimit"] == 0  # Prefect, not Kubernetes, decides about restarts
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = pod["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 2 and c["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert c["image"] == "example/genforge:cuda" and c["securityContext"]["runAsNonRoot"] is True
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    mounts = {m["name"] for m in c["volumeMounts"]}
    assert mounts == {v["name"] for v in pod["volumes"]}


def test_compose_file_has_what_docker_compose_requires():
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert {"postgres", "server", "worker"} <= set(services)
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services and cond["condition"] in ("service_started", "service_healthy")
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], dep
        for vol in svc.get("volumes", []):
            src = vol.split(":", 1)[0]
            assert src in doc["volumes"] or src.startswith((".", "/")), vol
    build = services["worker"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    db_url = services["server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert db_url.startswith("postgresql+asyncpg://") and "${POSTGRES_PASSWORD}" in db_url
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD")
    # the Prefect API starts deployments on the workers: never published on every interface by default
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_kubernetes_manifests_are_complete():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "worker.yaml").read_text()))
    kinds = {d["kind"] for d in docs}
    assert {"ServiceAccount", "Role", "RoleBinding", "PersistentVolumeClaim", "Deployment"} <= kinds
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"] and d["metadata"]["namespace"] == "genforge"
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    worker = pod["containers"][0]
    assert "genforge-kubernetes-gpu" in worker["command"] and worker["envFrom"][0]["secretRef"]["name"]
    claim = next(d for d in docs if d["kind"] == "PersistentVolumeClaim")["metadata"]["name"]
    assert base_job_template(POOLS["kubernetes-gpu"])["variables"]["properties"]["run_store_claim"]["default"] == claim


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_run_as_a_non_root_user_and_copy_what_exists(name):
    text = (DEPLOY / "docker" / name).read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    for src in re.findall(r"^COPY\s+(\S+)\s", text, re.M):
        assert (ROOT / src).exists(), src
    assert "torch==2.13.0" in text or "pytorch/pytorch" in text  # never an unpinned CUDA torch by accident


SECRET = re.compile(r"(password|secret|token|access_key|api_key)[\"']?\s*[:=]\s*[\"']?(?!\$\{)[A-Za-z0-9/+]{6,}", re.I)


def test_no_credentials_in_deploy_files():
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix not in (".pyc",):
            text = path.read_text()
            assert not SECRET.search(text), f"{path}: {SECRET.search(text).group(0)}"


def test_automations_target_only_genforge_pipeline_runs():
    crash, restart = crash_automations()
    for a in (crash, restart):
        related = a.trigger.match_related
        related = related[0] if isinstance(related, list) else related
        assert related.root["prefect.resource.name"] == "genforge-pipeline"
    assert crash.trigger.posture == "Proactive" and crash.trigger.within.total_seconds() == 90
    assert restart.actions[0].state.value == "SCHEDULED"
    json.dumps(crash.model_dump(mode="json"))  # serialisable for the API


def test_deploy_without_a_server_says_what_to_do(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path)
    proc = subprocess.run([str(Path(sys.executable).parent / "genforge"), "deploy"], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "PREFECT_API_URL is not set" in proc.stderr and "docs/deploy.md" in proc.stderr
