"""The Kubernetes manifests validate against the Kubernetes schemas and refer to each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

MANIFESTS = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31"


def documents() -> list[dict[str, Any]]:
    found = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def named(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in documents() if d["kind"] == kind}


@pytest.mark.parametrize(
    "manifest",
    # KEDA's ScaledObject is a custom resource the Kubernetes schemas do not hold.
    [d for d in documents() if not d["apiVersion"].startswith("keda.sh/")],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_each_manifest_is_valid_kubernetes(manifest):
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    files = {p.name for p in MANIFESTS.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files - {"secret.example.yaml"}


def test_services_autoscalers_and_budgets_point_at_deployments_that_exist():
    deployments = named("Deployment")
    labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    for service in named("Service").values():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= lab.items() for lab in labels), service["metadata"]
    for budget in named("PodDisruptionBudget").values():
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(selector.items() <= lab.items() for lab in labels)
    for scaler in [*named("HorizontalPodAutoscaler").values(), *named("ScaledObject").values()]:
        assert scaler["spec"]["scaleTargetRef"]["name"] in deployments


def test_pods_use_only_config_and_volumes_that_exist():
    configs, secrets = named("ConfigMap"), named("Secret")
    claims = named("PersistentVolumeClaim")
    pods = [
        d["spec"]["template"]["spec"] for d in documents() if d["kind"] in ("Deployment", "Job")
    ]
    for pod in pods:
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in configs
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims


def test_workers_get_a_gpu_each_and_time_to_finish_their_batch():
    worker = named("Deployment")["textq-worker"]["spec"]["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert worker["terminationGracePeriodSeconds"] >= 300
    api = named("Deployment")["textq-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_workers_scale_on_a_metric_textq_exposes():
    from tests.deploy.test_deploy import exposed_names

    (trigger,) = named("ScaledObject")["textq-worker"]["spec"]["triggers"]
    assert "textq_queue_depth" in trigger["metadata"]["query"]
    assert "textq_queue_depth" in exposed_names()
