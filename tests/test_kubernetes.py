"""The Kubernetes manifests `render` writes: valid against the upstream schemas, shaped by the config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from subagent_telemetry._config import Config, with_overrides
from subagent_telemetry.render import FORMATS, render_files
from subagent_telemetry.render.dashboards import DASHBOARD_PATHS
from subagent_telemetry.render.kubernetes import DASHBOARDS_FILE, MONITOR_FILE
from subagent_telemetry.render.rules import PROMETHEUS_RULE_FILE
from tests.support.k8s_schema import validate_manifest

SERVICE_MONITOR: dict[str, Any] = {
    "telemetry": {
        "prometheus": {
            "tls": {"cert_file": "/etc/agent/tls.crt", "key_file": "/etc/agent/tls.key"},
            "basic_auth": {"username": "prometheus", "password_env": "METRICS_PASSWORD"},
        }
    },
    "alerts": {"prometheus_rule": {"namespace": "agents", "labels": {"prometheus": "main", "team": "ai"}}},
    "kubernetes": {
        "monitor": {
            "kind": "ServiceMonitor",
            "name": "research-agent",
            "namespace": "agents",
            "labels": {"prometheus": "main"},
            "selector": {"app.kubernetes.io/name": "research-agent", "tier": "workers"},
            "namespaces": ["agents", "agents-canary"],
            "port": "http-metrics",
            "path": "/internal/metrics",
            "interval": "15s",
        },
        "dashboards": {"namespace": "grafana", "labels": {"dashboards": "agents"}, "folder": None},
    },
}
CONFIGS = {"default": Config.default(), "service-monitor": Config.model_validate(SERVICE_MONITOR)}


def _documents(config: Config) -> list[dict[str, Any]]:
    files = render_files(config, ("prometheus-rule", "kubernetes"))
    return [doc for text in files.values() for doc in yaml.safe_load_all(text)]


def _monitor(config: Config) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(render_files(config, ("kubernetes",))[MONITOR_FILE])
    return doc


def _config_maps(config: Config) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(render_files(config, ("kubernetes",))[DASHBOARDS_FILE]))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_manifest_is_valid_against_the_upstream_schema(name: str) -> None:
    """PrometheusRule, monitor and ConfigMaps pass strict validation (types, patterns, no unknown field)."""
    documents = _documents(CONFIGS[name])
    assert {doc["kind"] for doc in documents} >= {"PrometheusRule", "ConfigMap"}
    for doc in documents:
        assert validate_manifest(doc) == [], doc["kind"]


def test_the_schema_check_rejects_an_unknown_field_and_a_bad_duration() -> None:
    """The validator itself catches what the API server would prune or refuse."""
    doc = _monitor(Config.default())
    doc["spec"]["podMetricsEndpoints"][0]["scrapeEvery"] = "30s"
    doc["spec"]["podMetricsEndpoints"][0]["interval"] = "30 seconds"
    problems = validate_manifest(doc)
    assert any("scrapeEvery: unknown field" in p for p in problems)
    assert any("interval" in p and "pattern" in p for p in problems)


def test_pod_monitor_scrapes_the_configured_pods_port_and_path() -> None:
    """The default PodMonitor selects app.kubernetes.io/name=agent on port `metrics` every 30s."""
    doc = _monitor(Config.default())
    assert doc["kind"] == "PodMonitor"
    assert doc["metadata"] == {
        "name": "subagent-telemetry",
        "namespace": "monitoring",
        "labels": {"release": "kube-prometheus-stack"},
    }
    assert doc["spec"]["selector"] == {"matchLabels": {"app.kubernetes.io/name": "agent"}}
    assert "namespaceSelector" not in doc["spec"]  # the monitor's own namespace
    assert doc["spec"]["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "30s"}]


def test_service_monitor_follows_tls_basic_auth_and_namespaces() -> None:
    """A listener with TLS and basic auth is scraped over https with the credentials' Secrets."""
    doc = _monitor(CONFIGS["service-monitor"])
    assert doc["kind"] == "ServiceMonitor"
    assert doc["spec"]["namespaceSelector"] == {"matchNames": ["agents", "agents-canary"]}
    (endpoint,) = doc["spec"]["endpoints"]
    assert endpoint["scheme"] == "https"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "research-agent-tls", "key": "ca.crt"}
    assert endpoint["basicAuth"]["password"] == {"name": "research-agent-basic-auth", "key": "password"}
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
        "http-metrics",
        "/internal/metrics",
        "15s",
    )


def test_dashboard_config_maps_hold_the_rendered_dashboards_for_the_sidecar() -> None:
    """One ConfigMap per dashboard, labelled grafana_dashboard=1, its JSON exactly the dashboard file."""
    config = Config.default()
    dashboards = render_files(config, ("dashboards",))
    maps = _config_maps(config)
    assert len(maps) == len(DASHBOARD_PATHS)
    for config_map in maps:
        assert config_map["metadata"]["labels"] == {"grafana_dashboard": "1"}
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Subagents"}
        ((key, text),) = config_map["data"].items()
        assert text == dashboards[Path("dashboards") / key]
    assert len({m["metadata"]["name"] for m in maps}) == len(maps)


def test_dashboard_config_maps_fit_client_side_kubectl_apply() -> None:
    """Each ConfigMap stays under the 256 KiB last-applied annotation limit of `kubectl apply`."""
    for config_map in _config_maps(Config.default()):
        assert len(json.dumps(config_map)) < 262_144


def test_no_folder_annotation_when_folder_is_null() -> None:
    """dashboards.folder: null leaves the folder to the sidecar's default."""
    for config_map in _config_maps(CONFIGS["service-monitor"]):
        assert "annotations" not in config_map["metadata"]
        assert config_map["metadata"]["namespace"] == "grafana"


def test_namespace_and_label_overrides_reach_every_object() -> None:
    """The values behind `render --namespace/--label` land on the rule, the monitor and the ConfigMaps."""
    labels = {"release": "prom", "team": "ai"}
    overrides = {
        "alerts": {"prometheus_rule": {"namespace": "obs", "labels": labels}},
        "kubernetes": {
            "monitor": {"namespace": "obs", "labels": labels},
            "dashboards": {"namespace": "obs", "labels": {"grafana_dashboard": "1", **labels}},
        },
    }
    for doc in _documents(with_overrides(Config.default(), overrides)):
        assert doc["metadata"]["namespace"] == "obs"
        assert labels.items() <= doc["metadata"]["labels"].items()
        assert validate_manifest(doc) == []


def test_prometheus_rule_carries_the_rule_selector_labels() -> None:
    """alerts.prometheus_rule.labels are what the operator's ruleSelector matches."""
    doc = yaml.safe_load(render_files(CONFIGS["service-monitor"], ("prometheus-rule",))[PROMETHEUS_RULE_FILE])
    assert doc["metadata"]["labels"] == {"prometheus": "main", "team": "ai"}
    assert doc["metadata"]["namespace"] == "agents"


def test_grafana_api_bodies_create_or_replace_by_uid() -> None:
    """Each POST /api/dashboards/db body is the dashboard with id null, overwrite true and the folder."""
    config = with_overrides(Config.default(), {"dashboards": {"folder_uid": "agents"}})
    files = render_files(config, ("dashboards", "grafana-api"))
    for path in DASHBOARD_PATHS.values():
        body = json.loads(files[Path("grafana-api") / path.name])
        board = json.loads(files[path])
        assert body["overwrite"] is True
        assert body["folderUid"] == "agents"
        assert body["dashboard"] == {**board, "id": None}
        assert body["dashboard"]["uid"] == board["uid"]


def test_every_format_renders_for_the_default_config() -> None:
    """Each format alone writes files, and together they are the union of the parts."""
    config = Config.default()
    parts = {fmt: render_files(config, (fmt,)) for fmt in FORMATS}
    assert all(parts.values())
    union = {path for files in parts.values() for path in files}
    assert set(render_files(config, FORMATS)) == union
