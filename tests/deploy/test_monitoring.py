"""deploy/monitoring: promtool accepts the config and rules, the rule tests pass, and the dashboard and alerts
query only metrics (and labels) that the gateway and TF Serving export."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.deploy.metric_names import (
    GATEWAY_METRICS,
    KNOWN,
    base_name,
    legend_labels,
    metric_families,
    unknown_label_uses,
)
from tests.deploy.tools import DEPLOY, find_tool, run

PROMETHEUS = DEPLOY / "monitoring" / "prometheus"
GRAFANA = DEPLOY / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tlserve.json"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))


def dashboard_targets() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]


def rule_expressions() -> list[str]:
    return [
        rule["expr"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def test_promtool_accepts_the_scrape_config_and_its_rule_files() -> None:
    output = run([find_tool("promtool"), "check", "config", PROMETHEUS / "prometheus.yml"])
    assert f"SUCCESS: {len(RULE_FILES)} rule files found" in output


def test_promtool_accepts_the_rules() -> None:
    output = run([find_tool("promtool"), "check", "rules", *RULE_FILES])
    assert "SUCCESS" in output


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    output = run([find_tool("promtool"), "test", "rules", "tests/tlserve.test.yml"], cwd=PROMETHEUS)
    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test() -> None:
    alerts = {
        rule["alert"]
        for path in RULE_FILES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tests = yaml.safe_load((PROMETHEUS / "tests" / "tlserve.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert alerts == tested


def test_dashboard_parses_and_every_panel_queries_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "tlserve"
    graphs = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(graphs) >= 8
    for panel in graphs:
        assert panel["datasource"]["uid"] == "prometheus"
        assert panel["targets"], panel["title"]
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioned["datasources"][0]["uid"] == "prometheus"


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_use_only_exported_metrics_and_labels(source: str) -> None:
    expressions = [t["expr"] for t in dashboard_targets()] if source == "dashboard" else rule_expressions()
    used = set().union(*(metric_families(expr) for expr in expressions))
    assert used <= KNOWN.keys(), f"not exported by the gateway or TF Serving: {sorted(used - KNOWN.keys())}"
    problems = [problem for expr in expressions for problem in unknown_label_uses(expr)]
    assert not problems
    if source == "dashboard":
        for target in dashboard_targets():
            families = metric_families(target["expr"])
            carried = set().union(*(KNOWN[family][1] for family in families)) | {"instance", "job"}
            assert set(legend_labels(target.get("legendFormat", ""))) <= carried, target["legendFormat"]


def test_dashboard_shows_every_gateway_metric() -> None:
    used = set().union(*(metric_families(target["expr"]) for target in dashboard_targets()))
    assert set(GATEWAY_METRICS) <= used


def test_design_metric_list_matches_the_gateway_code() -> None:
    """The names and labels above are the design's (docs/gateway.md); the metrics module defines exactly those."""
    from prometheus_client.metrics import MetricWrapperBase

    from service.gateway.core.metrics import GatewayMetrics

    defined = {}
    for metric in vars(GatewayMetrics()).values():
        if isinstance(metric, MetricWrapperBase):
            kind = metric._type  # prometheus_client keeps no public accessor for these
            name = metric._name + ("_total" if kind == "counter" else "")
            defined[name] = (kind, frozenset(metric._labelnames))
    assert defined == GATEWAY_METRICS


def test_name_reader_finds_histogram_families_and_bad_labels() -> None:
    """Guards the checks above: the PromQL reader must see through _bucket and flag a label no metric has."""
    expr = 'histogram_quantile(0.9, sum by (le) (rate(tlserve_batch_size_bucket{label="canary"}[5m])))'
    assert metric_families(expr) == {"tlserve_batch_size"}
    assert unknown_label_uses(expr) == ["tlserve_batch_size_bucket{label}"]
    assert base_name("tlserve_requests_total") == "tlserve_requests_total"


def test_scrape_jobs_match_the_alert_job_names() -> None:
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in scrape["scrape_configs"]}
    assert {"gateway", "tfserving"} <= jobs
    assert any('job="tfserving"' in expr for expr in rule_expressions())
