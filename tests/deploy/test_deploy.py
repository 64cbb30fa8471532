"""The deploy files hold together: compose references, Prometheus targets, metric names.

Docker does not run here, so these checks are what can be verified of them on this machine.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

from shared.jobs.drift_metrics import DriftCollector
from shared.jobs.queue import QueueCollector
from tests.deploy.prometheus import CONFIG, ROOT, alert_rules, dashboard_queries

METRIC_NAME = re.compile(r"\btextq_[a-z0-9_]+")
SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}


def exposed_names() -> dict[str, set[str]]:
    """Return each textq metric family and the sample names a scrape shows of it."""
    families = [f for f in REGISTRY.collect() if f.name.startswith("textq_")]
    families += list(QueueCollector(db=None).collect())  # type: ignore[arg-type]
    families += list(DriftCollector(db=None).collect())  # type: ignore[arg-type]
    return {
        f.name: {f.name + suffix for suffix in SAMPLE_SUFFIXES.get(f.type, ("",))} for f in families
    }


def test_the_dashboard_and_alerts_use_only_metrics_textq_exposes():
    samples = set().union(*exposed_names().values())
    used = {name for expr in dashboard_queries() for name in METRIC_NAME.findall(expr)}
    used |= {name for rule in alert_rules() for name in METRIC_NAME.findall(rule["expr"])}
    assert used, "no textq metric found in the dashboard or the alerts"
    assert used <= samples, f"not exposed by textq: {sorted(used - samples)}"


def test_the_dashboard_shows_every_metric_textq_exposes():
    queries = " ".join(dashboard_queries())
    unshown = [
        name
        for name, samples in exposed_names().items()
        if not samples & set(METRIC_NAME.findall(queries))
    ]
    assert unshown == []


def test_each_alert_says_how_bad_and_what_to_do():
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == {
        "TextqBacklogGrowing",
        "TextqWorkerStalled",
        "TextqWebhookEndpointFailing",
        "TextqDriftHigh",
    }
    for rule in rules:
        assert rule["for"] and rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def test_compose_references_only_services_volumes_and_files_it_has(compose):
    services, volumes = compose["services"], set(compose.get("volumes") or {})
    for name, service in services.items():
        depends = service.get("depends_on") or []
        assert set(depends) <= set(services), f"{name} depends on an undefined service"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if source.startswith(("./", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is missing"
            else:
                assert source in volumes, f"{name} uses undefined volume {source}"
        if "build" in service:
            assert (ROOT / "Dockerfile").exists()


def test_prometheus_scrapes_compose_services_on_the_ports_they_serve(compose):
    config = yaml.safe_load(CONFIG.read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        for group in job["static_configs"]
        for target in group["targets"]
    ]
    for target in targets:
        host = target.split(":")[0]
        assert host in compose["services"], f"scrape target {target} is no compose service"
    assert "api:8000" in targets and "worker:9101" in targets and "webhooks:9102" in targets
    assert compose["x-textq-env"]["TEXTQ_METRICS_HOST"] == "0.0.0.0"


def test_compose_mounts_the_rule_files_where_the_config_finds_them(compose):
    # Prometheus reads rule_files relative to its config: mounted side by side, the shipped
    # config works in compose as it does beside alerts.yml in this repository.
    mounts = dict(m.split(":")[1::-1] for m in compose["services"]["prometheus"]["volumes"])
    config_at = Path(mounts["/etc/prometheus/prometheus.yml"].removeprefix("./"))
    assert ROOT / config_at == CONFIG
    for rule_file in yaml.safe_load(CONFIG.read_text())["rule_files"]:
        assert not Path(rule_file).is_absolute(), f"{rule_file}: only inside a container"
        assert mounts[f"/etc/prometheus/{rule_file}"] == f"./deploy/prometheus/{rule_file}"
