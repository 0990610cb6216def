"""The alert rules and the Grafana dashboard in deploy/ name only metrics the processes really export, so renaming
a metric without updating them fails here instead of silently blanking a panel or disarming an alert."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml  # type: ignore[import-untyped]

from api.metrics import build_api_metrics
from core.observability.metrics import build_metrics

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
_METRIC = re.compile(r"\bpatriot_[a-z0-9_]+\b")
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"), "gauge": ("",)}


def exported_names() -> set[str]:
    """Every series name the API process exports: the kernel's metrics and the API's own."""
    metrics = build_metrics("api")
    build_api_metrics(metrics)
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def alert_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "patriot-api.json").read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_alert_rules_name_only_exported_metrics() -> None:
    expressions = alert_expressions()
    referenced = {name for expr in expressions for name in _METRIC.findall(expr)}
    assert referenced - exported_names() == set()
    # the alerts the API needs are all there
    assert {
        "patriot_api_order_duration_seconds_bucket",
        "patriot_api_orders_failed_total",
        "patriot_api_requests_without_correlation_id_total",
        "patriot_api_requests_total",
        "patriot_bus_dead_lettered_total",
    } <= referenced


def test_dashboard_targets_name_only_exported_metrics() -> None:
    expressions = dashboard_expressions()
    referenced = {name for expr in expressions for name in _METRIC.findall(expr)}
    assert referenced - exported_names() == set()
    assert {
        "patriot_api_request_duration_seconds_bucket",
        "patriot_api_orders_placed_total",
        "patriot_api_orders_failed_total",
        "patriot_api_websocket_clients",
        "patriot_api_rate_limited_total",
    } <= referenced


def test_prometheus_config_scrapes_the_api_and_loads_the_alert_rules() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    api = next(job for job in config["scrape_configs"] if job["job_name"] == "patriot-api")
    assert api["metrics_path"] == "/metrics"
