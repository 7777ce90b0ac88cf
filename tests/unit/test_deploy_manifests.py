"""The deployment files as shipped: deploy/k8s renders with `kubectl kustomize` and validates
strictly against the Kubernetes schemas (offline, kubernetes-validate); every Deployment is
non-root, read-only, probed and covered by a disruption budget; services reach only the broker,
the store and DNS; and the compose file and the manifests name only real settings and the key
files `strongroom keys init` makes."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from launch.config_docs import render
from launch.deployment_keys import KEY_FILES
from shared import topology

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "production"
SERVICES = ("gateway", "policysvc", "keysvc", "auditsvc")
CRD_KINDS = {"ScaledObject", "TriggerAuthentication"}
KNOWN_VARIABLES = set(re.findall(r"`(STRONGROOM_[A-Z0-9_]+|MONGODB_URL)`", render()))


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _of(docs: list[dict], kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_every_resource_validates_strictly_and_the_validator_catches_a_typo(rendered):
    version = kubernetes_validate.latest_version()
    for doc in rendered:
        if doc["kind"] in CRD_KINDS:
            with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # CRDs: checked below instead
                kubernetes_validate.validate(doc, version, strict=True)
            continue
        kubernetes_validate.validate(doc, version, strict=True)
    budget = copy.deepcopy(next(iter(_of(rendered, "PodDisruptionBudget").values())))
    budget["spec"]["minAvialable"] = budget["spec"].pop("minAvailable")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(budget, version, strict=True)


def test_every_deployment_is_non_root_read_only_probed_and_budgeted(rendered):
    deployments = _of(rendered, "Deployment")
    assert set(deployments) == {f"strongroom-{s}" for s in SERVICES}
    budgets = _of(rendered, "PodDisruptionBudget").values()
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert "memory" in container["resources"]["limits"]
        (main,) = pod["containers"]
        assert "readinessProbe" in main and "startupProbe" in main, name
        service = name.removeprefix("strongroom-")
        assert main["command"] == ["strongroom", "serve", service]
        if service != "gateway":
            assert main["readinessProbe"]["exec"]["command"] == ["strongroom", "health", "--service", service]
        labels = spec["template"]["metadata"]["labels"]
        assert [b for b in budgets if b["spec"]["minAvailable"] == 1
                and b["spec"]["selector"]["matchLabels"].items() <= labels.items()], f"no disruption budget for {name}"


def test_manifests_name_only_real_settings_and_the_key_files_keys_init_makes(rendered):
    key_files = {spec.name for spec in KEY_FILES}
    config = next(iter(_of(rendered, "ConfigMap").values()))["data"]
    assert set(config) <= KNOWN_VARIABLES
    mounted = set()
    for deployment in _of(rendered, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        for env in pod["containers"][0]["env"]:
            assert env["name"] in KNOWN_VARIABLES, env["name"]
            if env.get("value", "").startswith("/run/strongroom/keys/"):
                mounted.add(env["value"].rsplit("/", 1)[1])
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert {item["path"] for item in volume["secret"]["items"]} <= key_files
    assert mounted == key_files


def test_services_reach_only_the_broker_the_store_and_dns(rendered):
    policies = _of(rendered, "NetworkPolicy")
    deny = policies["strongroom-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "egress" not in deny and "ingress" not in deny
    allowed = {(list(rule["to"][0]["podSelector"]["matchLabels"].values())[-1], port["port"])
               for rule in policies["strongroom-broker-and-store"]["spec"]["egress"] for port in rule["ports"]}
    assert allowed == {("rabbitmq", 5672), ("rabbitmq", 5671), ("mongodb", 27017), ("kube-dns", 53)}
    ingress = [name for name, p in policies.items() if "Ingress" in p["spec"]["policyTypes"] and p["spec"].get("ingress")]
    assert ingress == ["strongroom-gateway-ingress"]


def test_keda_scales_the_consumers_on_their_own_queues(rendered):
    prefix = next(iter(_of(rendered, "ConfigMap").values()))["data"]["STRONGROOM_BUS_PREFIX"]
    deployments = _of(rendered, "Deployment")
    auth = _of(rendered, "TriggerAuthentication")
    scaled = _of(rendered, "ScaledObject")
    assert set(scaled) == {"strongroom-policysvc", "strongroom-keysvc"}
    for name, obj in scaled.items():
        assert obj["spec"]["scaleTargetRef"]["name"] in deployments
        (trigger,) = obj["spec"]["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["queueName"] == prefix + name.removeprefix("strongroom-")
        assert name.removeprefix("strongroom-") in topology.SERVICE_BINDINGS
        assert trigger["authenticationRef"]["name"] in auth
        assert obj["spec"]["minReplicaCount"] >= 3  # pre-provisioned for a boot storm (docs/operations.md)


def test_compose_keeps_keys_in_secrets_and_archives_in_volumes_and_checks_every_service():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert {Path(s["file"]).name for s in compose["secrets"].values()} == {spec.name for spec in KEY_FILES}
    for service in SERVICES:
        spec = compose["services"][service]
        assert spec["command"] == ["strongroom", "serve", service]
        assert spec["read_only"] is True
        assert set(spec["environment"]) <= KNOWN_VARIABLES, service
        test = spec["healthcheck"]["test"]
        assert test == ["CMD", "strongroom", "health", "--service", service] if service != "gateway" else "/v1/health" in test[-1]
        for mounted in spec.get("secrets", []):
            assert f"/run/secrets/{mounted['target']}" in spec["environment"].values()
    audit = compose["services"]["auditsvc"]
    archive = audit["environment"]["STRONGROOM_AUDITSVC_ARCHIVE_DIR"]
    assert f"audit-archive:{archive}" in audit["volumes"] and "audit-archive" in compose["volumes"]
