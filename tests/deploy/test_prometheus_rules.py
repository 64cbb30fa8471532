"""The shipped Prometheus files as promtool reads them, and the alerts' unit tests.

deploy/prometheus/alerts.test.yml holds the cases; these tests run them and check that each
alert has a case where it fires and one where it must stay quiet, and that the KEDA trigger's
query and every dashboard query are evaluated there too.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy.prometheus import (
    CONFIG,
    RULE_TESTS,
    RULES,
    alert_rules,
    dashboard_queries,
    keda_query,
    promtool,
)


@pytest.fixture(scope="module")
def rule_tests() -> list[dict[str, Any]]:
    return yaml.safe_load(RULE_TESTS.read_text())["tests"]  # type: ignore[no-any-return]


def test_promtool_accepts_the_config_and_the_rules_as_shipped():
    # The config names its rule file relative to itself, so it checks here as in compose.
    config = promtool("check", "config", str(CONFIG.relative_to(CONFIG.parents[2])))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout + config.stderr
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_the_rules_unit_tests_pass():
    run = promtool("test", "rules", str(RULE_TESTS))
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_stays_quiet(rule_tests):
    cases = [case for test in rule_tests for case in test.get("alert_rule_test", [])]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case.get("exp_alerts") for case in mine), f"{rule['alert']} never fires"
        assert any(not case.get("exp_alerts") for case in mine), f"{rule['alert']} never quiet"
        for case in mine:
            for alert in case.get("exp_alerts") or []:
                # What fires must carry what the rule gives it: severity and both annotations.
                assert alert["exp_labels"]["severity"] == rule["labels"]["severity"]
                assert set(alert["exp_annotations"]) == set(rule["annotations"])


def test_the_keda_query_and_every_dashboard_query_are_evaluated(rule_tests):
    evaluated = {
        " ".join(case["expr"].split())
        for test in rule_tests
        for case in test.get("promql_expr_test", [])
    }
    shipped = {" ".join(expr.split()) for expr in [keda_query(), *dashboard_queries()]}
    assert shipped - evaluated == set(), "no promql_expr_test in alerts.test.yml"
