"""Debian's `prometheus` and `promtool`: run the shipped rules and scrape real textq processes.

`make test` installs the `prometheus` package (as root); the server it may start as a system
service is never used: tests start their own on a free loopback port with a temporary store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.processes import Process, free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts.test.yml"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "textq.json"
KEDA = DEPLOY / "kubernetes" / "keda-scaledobject.yaml"


def binary_or_skip(name: str) -> str:
    """Return the path of `prometheus` or `promtool`; without it, fail in CI and skip elsewhere."""
    found = shutil.which(name)
    if found:
        return found
    reason = f"{name} is missing; `make test` installs Debian's prometheus package (as root)"
    if os.environ.get("CI") or os.environ.get("TEXTQ_TEST_REQUIRE_SERVICES"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `promtool <args>` in the repository root and return what it did."""
    return subprocess.run(
        [binary_or_skip("promtool"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def dashboard_queries() -> list[str]:
    """Return the PromQL of every panel of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def alert_rules() -> list[dict[str, Any]]:
    """Return every alerting rule of alerts.yml (alert, expr, for, labels, annotations)."""
    rules = yaml.safe_load(RULES.read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def keda_query() -> str:
    """Return the Prometheus query the KEDA ScaledObject scales workers on."""
    scaler = yaml.safe_load(KEDA.read_text())
    (trigger,) = [t for t in scaler["spec"]["triggers"] if t["type"] == "prometheus"]
    return str(trigger["metadata"]["query"])


def start_prometheus(config: dict[str, Any], tmp: Path) -> tuple[Process, str]:
    """Start the real server on a free loopback port with `config` and a store under `tmp`.

    Return the process and its base URL once it answers /-/ready. Rule files named
    relatively in `config` are read relative to `tmp`, where the config is written.
    """
    binary = binary_or_skip("prometheus")
    tmp.mkdir(parents=True, exist_ok=True)
    config_path = tmp / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as handle:
        popen = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    process = Process(name="prometheus", popen=popen, log=log)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise AssertionError(f"prometheus exited early:\n{process.output()}")
        try:
            if httpx.get(f"{base_url}/-/ready", timeout=2).status_code == 200:
                return process, base_url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.stop()
    raise AssertionError(f"prometheus not ready after 30 s:\n{process.output()}")


def api_get(base_url: str, path: str, **params: str) -> Any:
    """Return the `data` of a Prometheus HTTP API answer, failing on an error status."""
    answer = httpx.get(f"{base_url}{path}", params=params, timeout=10).raise_for_status().json()
    assert answer["status"] == "success", answer
    return answer["data"]


def query(base_url: str, expr: str) -> list[dict[str, Any]]:
    """Return the instant vector `expr` evaluates to now: [{metric: labels, value: [t, v]}]."""
    data = api_get(base_url, "/api/v1/query", query=expr)
    assert data["resultType"] == "vector", data
    return data["result"]  # type: ignore[no-any-return]
