"""deploy/ checked offline: the kustomization builds and every object validates against the
Kubernetes OpenAPI schemas (Kubernetes 1.31, strict: unknown fields fail); RBAC grants each
ServiceAccount exactly its role; the Helm values use only keys the Dagster chart's values
schema knows; the Dockerfile is hadolint-clean and its lock installs into a clean venv."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import referencing
import yaml
from dagster_k8s.job import get_user_defined_k8s_config

from gpu_cost_pipeline.definitions import defs

REPO = Path(__file__).parents[1]
DEPLOY = REPO / "deploy"
KUBERNETES_VERSION = "1.31.0"  # ValidatingAdmissionPolicy is GA from 1.30
CHART_SCHEMA = Path(__file__).parent / "schemas" / "dagster-chart-values.schema.json"
NAMESPACE = "gpu-autoscaler"
CLUSTER_SCOPED_KINDS = {"Namespace", "CustomResourceDefinition"}
CUSTOM_KINDS = {"ServiceMonitor"}  # Prometheus Operator's, not in Kubernetes' schemas


@cache
def built_objects() -> tuple[dict, ...]:
    """`kubectl kustomize deploy/k8s` (kubectl ships with the build machines)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to build deploy/k8s (kustomize)")
    done = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return tuple(o for o in yaml.safe_load_all(done.stdout) if o)


def objects(kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in built_objects() if o["kind"] == kind}


def test_every_yaml_file_under_deploy_parses():
    files = [p for p in DEPLOY.rglob("*.y*ml")]
    assert len(files) >= 7
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_every_built_object_validates_against_the_kubernetes_schemas():
    kinds = set()
    for obj in built_objects():
        kinds.add(obj["kind"])
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {error}")
        if obj["kind"] not in CLUSTER_SCOPED_KINDS and not obj["kind"].startswith("Cluster"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]["name"]
    assert {"StatefulSet", "Deployment", "Service", "ServiceMonitor", "ConfigMap"} <= kinds
    assert {"CustomResourceDefinition"} <= kinds
    assert {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"} <= kinds


def test_a_schema_violation_is_caught():
    """The validation above can fail: a misspelt field is refused in strict mode."""
    deployment = json.loads(json.dumps(objects("Deployment")["gpu-cost-exporter"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def test_services_and_the_service_monitor_select_what_they_should():
    services = objects("Service")
    exporter = objects("Deployment")["gpu-cost-exporter"]
    timescale = objects("StatefulSet")["timescaledb"]
    for service, workload in (("gpu-cost-exporter", exporter), ("timescaledb", timescale)):
        selector = services[service]["spec"]["selector"]
        assert selector.items() <= pod_labels(workload).items(), service
    assert timescale["spec"]["serviceName"] in services
    monitor = objects("ServiceMonitor")["gpu-cost-exporter"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= services["gpu-cost-exporter"]["metadata"]["labels"].items()
    port_names = {p["name"] for p in services["gpu-cost-exporter"]["spec"]["ports"]}
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in port_names
    # The cluster label is the cluster's name from the ConfigMap (kustomize replacement).
    config = objects("ConfigMap")["gpu-cost-pipeline-config"]["data"]
    assert endpoint["relabelings"][0] == {
        "targetLabel": "cluster",
        "replacement": config["GPU_COST_CLUSTER"],
        "action": "replace",
    }
    assert config["GPU_COST_METRICS_ADDRESS"].endswith(":9410")
    assert (
        exporter["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9410
    )


def test_the_configmap_holds_settings_only_and_they_are_valid():
    from gpu_cost_pipeline.settings import SETTINGS, load_settings

    data = objects("ConfigMap")["gpu-cost-pipeline-config"]["data"]
    assert set(data) <= {s.variable for s in SETTINGS}
    assert not {s.variable for s in SETTINGS if s.secret} & set(data)  # secrets: in Secrets
    load_settings(data)  # raises on any invalid value


def test_dashboards_configmap_carries_the_sidecar_label_and_every_dashboard():
    dashboards = objects("ConfigMap")["gpu-cost-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: p.read_text() for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}
    assert dashboards["data"] == files


def rules_of(service_account: str) -> list[tuple[str, dict]]:
    """(binding scope, rule) for every rule bound to the ServiceAccount."""
    found = []
    for kind, role_kind, scope in (
        ("ClusterRoleBinding", "ClusterRole", "cluster"),
        ("RoleBinding", None, NAMESPACE),
    ):
        for binding in objects(kind).values():
            subjects = binding.get("subjects", [])
            if not any(
                s["kind"] == "ServiceAccount" and s["name"] == service_account for s in subjects
            ):
                continue
            assert all(s.get("namespace") == NAMESPACE for s in subjects)
            ref = binding["roleRef"]
            role = objects(role_kind or ref["kind"])[ref["name"]]
            found += [(scope, rule) for rule in role["rules"]]
    return found


def can(service_account: str, verb: str, group: str, resource: str) -> list[tuple[str, dict]]:
    return [
        (scope, rule)
        for scope, rule in rules_of(service_account)
        if verb in rule["verbs"] and group in rule["apiGroups"] and resource in rule["resources"]
    ]


ENFORCEMENT_ONLY = [
    (verb, "admissionregistration.k8s.io", resource)
    for verb in ("create", "delete")
    for resource in ("validatingadmissionpolicies", "validatingadmissionpolicybindings")
] + [
    ("create", "", "resourcequotas"),
    ("delete", "", "resourcequotas"),
    ("patch", "gpu-autoscaler.io", "autoscalingpolicies"),
]


def test_rbac_gives_each_service_account_only_its_role():
    accounts = objects("ServiceAccount")
    assert set(accounts) == {"gpu-cost-pipeline", "gpu-cost-enforcement", "gpu-cost-exporter"}
    for role in [*objects("ClusterRole").values(), *objects("Role").values()]:
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role
    # The pipeline: reads pods and nodes, our CRs; writes their status; creates Events.
    for verb, group, resource in [
        ("list", "", "pods"),
        ("list", "", "nodes"),
        ("list", "gpu-autoscaler.io", "costbudgets"),
        ("list", "gpu-autoscaler.io", "costattributions"),
        ("patch", "gpu-autoscaler.io", "costbudgets/status"),
        ("patch", "gpu-autoscaler.io", "costattributions/status"),
        ("create", "", "events"),
    ]:
        assert can("gpu-cost-pipeline", verb, group, resource), (verb, resource)
    assert not can("gpu-cost-pipeline", "patch", "gpu-autoscaler.io", "costbudgets")  # spec: no
    # Only the enforcement job changes admission, quotas and autoscaling policies.
    for verb, group, resource in ENFORCEMENT_ONLY:
        assert can("gpu-cost-enforcement", verb, group, resource), (verb, resource)
        assert not can("gpu-cost-pipeline", verb, group, resource), (verb, resource)
        assert not can("gpu-cost-exporter", verb, group, resource), (verb, resource)
    # Secrets: get by name, in our namespace only; nobody lists or watches them.
    for account in accounts:
        for verb in ("list", "watch", "create", "update", "patch", "delete"):
            assert not can(account, verb, "", "secrets"), (account, verb)
    secret_rules = can("gpu-cost-pipeline", "get", "", "secrets")
    assert secret_rules and all(
        scope == NAMESPACE and rule.get("resourceNames") for scope, rule in secret_rules
    )
    assert not can("gpu-cost-enforcement", "get", "", "secrets")
    # The exporter talks to the database only.
    assert rules_of("gpu-cost-exporter") == []
    assert accounts["gpu-cost-exporter"]["automountServiceAccountToken"] is False


def pod_specs():
    for workload in [*objects("Deployment").values(), *objects("StatefulSet").values()]:
        pod = workload["spec"]["template"]["spec"]
        yield workload["metadata"]["name"], pod


def test_workloads_run_as_non_root_without_privilege_escalation():
    for name, pod in pod_specs():
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["resources"]["requests"], name


# ---- Helm values against the chart's values schema


@cache
def chart_schema() -> dict:
    return json.loads(CHART_SCHEMA.read_text())


def helm_values() -> dict:
    return yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())


def _resolve(node: dict) -> dict:
    while "$ref" in node and node["$ref"].startswith("#/definitions/"):
        resolved = chart_schema()["definitions"][node["$ref"].removeprefix("#/definitions/")]
        node = {**{k: v for k, v in node.items() if k != "$ref"}, **resolved}
    return node


def unknown_keys(value: Any, node: dict, path: str = "") -> list[str]:
    """Keys of ``value`` the schema does not declare where it declares an object's keys.
    Kubernetes objects (external $refs) and free-form objects are left to the validator."""
    node = _resolve(node)
    if "anyOf" in node:
        wanted = (
            "array" if isinstance(value, list) else "object" if isinstance(value, dict) else None
        )
        for option in node["anyOf"]:
            option = _resolve(option)
            if option.get("type") == wanted or ("properties" in option and wanted == "object"):
                node = {**option, "items": node.get("items", option.get("items"))}
                break
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [
            u
            for i, item in enumerate(value)
            for u in unknown_keys(item, node["items"], f"{path}[{i}]")
        ]
    if not isinstance(value, dict) or str(node.get("$ref", "")).startswith("http"):
        return []
    properties = node.get("properties")
    if not properties:  # free-form (e.g. postgresqlParams, runK8sConfig's dicts)
        return []
    found = []
    for key, item in value.items():
        if key not in properties:
            found.append(f"{path}.{key}".lstrip("."))
        else:
            found += unknown_keys(item, properties[key], f"{path}.{key}")
    return found


def _without_required(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [_without_required(v) for v in node]
    return node


def chart_validator() -> jsonschema.Validator:
    """The chart schema (its required lists dropped: Helm checks them after merging the
    chart's defaults); its Kubernetes $refs resolve to the 1.31 definitions."""
    k8s = json.loads(
        (
            Path(kubernetes_validate.__file__).parent
            / "kubernetes-json-schema"
            / f"v{KUBERNETES_VERSION}-local-strict"
            / "_definitions.json"
        ).read_text()
    )
    k8s_uri = "https://kubernetesjsonschema.dev/v1.18.0/_definitions.json"
    text = json.dumps(k8s["$defs"]).replace('"#/$defs/', f'"{k8s_uri}#/$defs/')
    definitions = {"definitions": json.loads(text), "$defs": json.loads(text)}
    registry = referencing.Registry().with_resource(
        k8s_uri, referencing.Resource.from_contents(definitions, referencing.jsonschema.DRAFT7)
    )
    return jsonschema.Draft7Validator(_without_required(chart_schema()), registry=registry)


def test_helm_values_use_only_keys_the_chart_schema_knows():
    values = helm_values()
    assert unknown_keys(values, chart_schema()) == []
    errors = sorted(chart_validator().iter_errors(values), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("path", "bad"),
    [
        (["runLauncher", "config", "k8sRunLauncher"], {"jobTTL": 60}),
        (["dagster-user-deployments", "deployments", 0], {"enviroment": {}}),
        (["dagsterDaemon", "runCoordinator", "config", "queuedRunCoordinator"], {"maxRuns": 3}),
        ([], {"dagsterWebServer": {}}),
    ],
)
def test_an_unknown_helm_key_fails(path: list, bad: dict):
    values = helm_values()
    node = values
    for step in path:
        node = node[step]
    node.update(bad)
    assert unknown_keys(values, chart_schema())


def test_helm_values_wire_our_objects():
    values = helm_values()
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "gpu_cost_pipeline.definitions"]
    assert {"name": "gpu-cost-pipeline-config"} in deployment["envConfigMaps"]
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    run_pods = launcher["config"]["k8sRunLauncher"]["runK8sConfig"]
    assert run_pods["podSpecConfig"]["serviceAccountName"] in objects("ServiceAccount")
    assert "postgresqlPassword" not in values["postgresql"]  # from a Secret, never here
    assert values["generatePostgresqlPasswordSecret"] is False


def test_the_minute_job_tag_is_valid_dagster_k8s_config():
    config = get_user_defined_k8s_config(defs.resolve_job_def("gpu_cost_job").tags)
    assert config.job_spec_config["ttl_seconds_after_finished"] == 300
    assert config.container_config["resources"]["requests"]["cpu"] == "500m"


def test_only_the_enforcement_job_runs_as_the_enforcement_account():
    """K8sRunLauncher reads the job's dagster-k8s/config tag: the enforcement run's pod gets the
    account that may change admission, quotas and autoscaling; every other run the default."""
    accounts = objects("ServiceAccount")
    for job in defs.resolve_all_job_defs():
        account = get_user_defined_k8s_config(job.tags).pod_spec_config.get("service_account_name")
        if job.name == "enforce_budget":
            assert account == "gpu-cost-enforcement" and account in accounts
        else:
            assert account is None, job.name


# ---- the image


def test_the_dockerfile_is_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), str(DEPLOY / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def pins(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", lock.read_text(), re.M))


def test_the_image_lock_is_the_dev_lock_without_the_test_tools():
    image, full = pins(DEPLOY / "requirements.lock"), pins(REPO / "requirements.lock")
    assert image.items() <= full.items()  # same versions
    assert {"pytest", "ruff", "hypothesis"} & set(image) == set()
    assert {"dagster", "dagster-k8s", "dagster-postgres", "prometheus-client"} <= set(image)


def test_the_image_lock_installs_into_a_clean_venv_as_the_dockerfile_does(tmp_path: Path):
    """Docker cannot build here (no engine): the Dockerfile's install steps, run by hand
    (without --compile-bytecode, which only saves the containers' start-up time)."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert (
        "uv pip sync --no-cache --compile-bytecode --python /opt/venv/bin/python"
        " deploy/requirements.lock" in dockerfile
    )
    assert (
        "uv pip install --no-cache --compile-bytecode --python /opt/venv/bin/python --no-deps ."
        in dockerfile
    )
    venv = tmp_path / "venv"
    uv = Path(sys.executable).parent / "uv"
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    steps = [
        [str(uv), "pip", "sync", "--quiet", "--python", str(python), "deploy/requirements.lock"],
        [str(uv), "pip", "install", "--quiet", "--python", str(python), "--no-deps", "."],
    ]
    for step in steps:
        done = subprocess.run(step, cwd=REPO, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
    # What the containers run: the code location loads, and the CLI answers.
    check = subprocess.run(
        [str(python), "-c", "import gpu_cost_pipeline.definitions, prometheus_client"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr[-3000:]
    cli = subprocess.run(
        [str(venv / "bin" / "gpu-autoscaler"), "metrics", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0 and "--once" in cli.stdout, cli.stderr
    assert (venv / "bin" / "dagster").exists()
    site = next((venv / "lib").glob("python3.*/site-packages"))
    assert (site / "gpu_cost_pipeline" / "store" / "migrations" / "050_cost_totals.sql").exists()
    assert not (site / "pytest").exists()
