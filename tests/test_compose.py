"""compose/: the docker-compose stack is wired consistently, pinned, local-only, and valid Compose."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from subagent_telemetry import Config
from subagent_telemetry._config import load_config

REPO = Path(__file__).resolve().parents[1]
COMPOSE_DIR = REPO / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENTRYPOINT = COMPOSE_DIR / "grafana" / "entrypoint.sh"

# Exact release tags; the major versions the project supports.
PINNED_IMAGES = {
    "prometheus": re.compile(r"^prom/prometheus:v3\.\d+\.\d+$"),
    "alertmanager": re.compile(r"^prom/alertmanager:v0\.(2[89]|[3-9]\d)\.\d+$"),
    "grafana": re.compile(r"^grafana/grafana:1[12]\.\d+\.\d+$"),
}


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _load(COMPOSE_FILE)
    return data


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = compose["services"]
    return services


def _bind_mounts(service: dict[str, Any]) -> dict[str, tuple[Path, str]]:
    """Container path → (host path, mode) for the bind mounts of a service."""
    mounts = {}
    for volume in service.get("volumes", ()):
        parts = str(volume).split(":")
        if parts[0].startswith((".", "/")):
            mode = parts[2] if len(parts) > 2 else "rw"
            mounts[parts[1]] = ((COMPOSE_DIR / parts[0]).resolve(), mode)
    return mounts


def _listen_ports(service: dict[str, Any]) -> set[int]:
    """Ports a service listens on inside its network: its published container ports and `--port N`."""
    ports = {int(str(p).rsplit(":", 1)[-1].split("/")[0]) for p in service.get("ports", ())}
    command = [str(a) for a in service.get("command", ())]
    ports |= {int(command[i + 1]) for i, arg in enumerate(command[:-1]) if arg == "--port"}
    return ports


def _prometheus_yml() -> dict[str, Any]:
    data: dict[str, Any] = _load(COMPOSE_DIR / "prometheus" / "prometheus.yml")
    return data


def _datasources() -> list[dict[str, Any]]:
    path = COMPOSE_DIR / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
    datasources: list[dict[str, Any]] = _load(path)["datasources"]
    return datasources


def _assert_points_at(compose: dict[str, Any], address: str) -> None:
    host, _, port = address.partition(":")
    services = _services(compose)
    assert host in services, f"{address}: {host} is not a compose service"
    assert int(port) in _listen_ports(services[host]), f"{address}: {host} does not listen on {port}"


class TestComposeFile:
    def test_has_no_version_key(self, compose: dict[str, Any]) -> None:
        """The file follows the Compose spec, which dropped the top-level `version:`."""
        assert "version" not in compose

    def test_every_bind_mounted_path_exists(self, compose: dict[str, Any]) -> None:
        """Each bind mount's source exists in the repository."""
        for name, service in _services(compose).items():
            for target, (source, _) in _bind_mounts(service).items():
                assert source.exists(), f"{name}: {source} (mounted at {target}) does not exist"

    def test_build_context_and_dockerfile_exist(self, compose: dict[str, Any]) -> None:
        """Every build points at an existing context holding its Dockerfile."""
        builds = [s["build"] for s in _services(compose).values() if "build" in s]
        assert builds
        for build in builds:
            context = (COMPOSE_DIR / build["context"]).resolve()
            assert context == REPO
            assert (context / build["dockerfile"]).is_file()

    def test_dockerfile_copies_what_the_package_build_needs(self) -> None:
        """The demo image copies existing files, including the package and the readme pyproject names."""
        dockerfile = (COMPOSE_DIR / "demo" / "Dockerfile").read_text()
        sources = [s for line in re.findall(r"^COPY (.+)$", dockerfile, re.M) for s in line.split()[:-1]]
        for source in sources:
            assert (REPO / source).exists(), source
        assert {"pyproject.toml", "README.md", "exporter"} <= set(sources)
        assert re.search(r"^FROM python:\d+\.\d+\.\d+-slim-\w+$", dockerfile, re.M)

    @pytest.mark.parametrize("service", sorted(PINNED_IMAGES))
    def test_image_pinned_to_exact_release(self, compose: dict[str, Any], service: str) -> None:
        """Prometheus 3.x, Alertmanager 0.28+ and Grafana 11/12 are pinned to exact tags."""
        assert PINNED_IMAGES[service].match(_services(compose)[service]["image"])

    def test_every_pulled_image_has_exact_tag(self, compose: dict[str, Any]) -> None:
        """No pulled image floats (no `latest`, no missing or partial tag)."""
        for name, service in _services(compose).items():
            if "build" not in service:
                assert re.search(r":v?\d+\.\d+\.\d+$", service["image"]), name

    def test_ports_published_on_loopback_only(self, compose: dict[str, Any]) -> None:
        """Every published port is bound to 127.0.0.1."""
        published = [p for s in _services(compose).values() for p in s.get("ports", ())]
        assert published
        for port in published:
            assert str(port).startswith("127.0.0.1:"), port

    def test_services_with_ports_have_healthchecks(self, compose: dict[str, Any]) -> None:
        """Every service that listens has a healthcheck."""
        for name, service in _services(compose).items():
            if _listen_ports(service):
                assert "test" in service.get("healthcheck", {}), name

    def test_state_kept_in_declared_named_volumes(self, compose: dict[str, Any]) -> None:
        """Prometheus, Alertmanager and Grafana keep data in named volumes declared at the top level."""
        declared = set(compose["volumes"])
        for name in ("prometheus", "alertmanager", "grafana"):
            named = {str(v).split(":")[0] for v in _services(compose)[name]["volumes"]} & declared
            assert named, f"{name} has no named volume"

    def test_prometheus_receives_otlp_and_reloads(self, compose: dict[str, Any]) -> None:
        """Prometheus runs with the OTLP receiver and the lifecycle API enabled."""
        command = _services(compose)["prometheus"]["command"]
        assert "--web.enable-otlp-receiver" in command
        assert "--web.enable-lifecycle" in command

    def test_rendered_files_mounted_read_only(self, compose: dict[str, Any]) -> None:
        """../alerts reaches Prometheus and ../dashboards reaches Grafana, both read-only."""
        prom = _bind_mounts(_services(compose)["prometheus"])
        graf = _bind_mounts(_services(compose)["grafana"])
        assert (REPO / "alerts", "ro") in prom.values()
        assert (REPO / "dashboards", "ro") in graf.values()


class TestWiring:
    def test_scrape_targets_are_compose_services(self, compose: dict[str, Any]) -> None:
        """Each Prometheus scrape target names a service and a port it listens on."""
        targets = [
            target
            for job in _prometheus_yml()["scrape_configs"]
            for static in job["static_configs"]
            for target in static["targets"]
        ]
        assert "demo:9464" in targets
        for target in targets:
            _assert_points_at(compose, target)

    def test_alertmanager_target_is_the_alertmanager_service(self, compose: dict[str, Any]) -> None:
        """Prometheus sends alerts to the alertmanager service's port."""
        (am,) = _prometheus_yml()["alerting"]["alertmanagers"]
        assert am["static_configs"][0]["targets"] == ["alertmanager:9093"]
        _assert_points_at(compose, "alertmanager:9093")

    def test_rule_files_exist_under_the_alerts_mount(self, compose: dict[str, Any]) -> None:
        """Every rule file Prometheus loads is a rendered file in the repository's alerts/."""
        mounts = _bind_mounts(_services(compose)["prometheus"])
        rule_files = _prometheus_yml()["rule_files"]
        assert rule_files
        for path in rule_files:
            target = next(t for t in mounts if path.startswith(t + "/"))
            assert (mounts[target][0] / Path(path).relative_to(target)).is_file(), path

    def test_webhook_receivers_are_compose_services(self, compose: dict[str, Any]) -> None:
        """Alertmanager's default webhook posts to the alert-log service."""
        config = _load(COMPOSE_DIR / "alertmanager" / "alertmanager.yml")
        urls = [w["url"] for r in config["receivers"] for w in r.get("webhook_configs", ())]
        assert urls
        for url in urls:
            _assert_points_at(compose, urlsplit(url).netloc)

    def test_datasource_urls_are_compose_services(self, compose: dict[str, Any]) -> None:
        """Grafana's data sources reach Prometheus and Alertmanager by service name and port."""
        for datasource in _datasources():
            _assert_points_at(compose, urlsplit(datasource["url"]).netloc)

    def test_otlp_demo_pushes_to_the_prometheus_receiver(self, compose: dict[str, Any]) -> None:
        """The OTLP demo's endpoint is Prometheus's OTLP path."""
        endpoint = _services(compose)["demo-otlp"]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert urlsplit(endpoint).path == "/api/v1/otlp"
        _assert_points_at(compose, urlsplit(endpoint).netloc)

    @pytest.mark.parametrize("path", sorted((COMPOSE_DIR / "demo").glob("*.yaml")), ids=lambda p: p.name)
    def test_demo_configs_are_valid(self, path: Path) -> None:
        """Every config the compose demos load passes the library's validation."""
        load_config(path)


class TestGrafanaProvisioning:
    def test_default_datasource_uid_is_the_dashboards(self) -> None:
        """The default Prometheus data source has the UID the dashboards are rendered with."""
        (prometheus,) = [d for d in _datasources() if d["type"] == "prometheus"]
        assert prometheus["isDefault"] is True
        assert prometheus["uid"] == Config.default().dashboards.datasource_uid

    @pytest.mark.parametrize("path", sorted((REPO / "dashboards").glob("*.json")), ids=lambda p: p.name)
    def test_dashboard_datasource_variable_defaults_to_provisioned_uid(self, path: Path) -> None:
        """Each dashboard's `datasource` variable selects the provisioned data source by default."""
        uids = {d["uid"] for d in _datasources()}
        variables = json.loads(path.read_text())["templating"]["list"]
        (variable,) = [v for v in variables if v["name"] == "datasource"]
        assert variable["current"]["value"] in uids

    def test_provisioning_folder_mounted_where_grafana_reads_it(self, compose: dict[str, Any]) -> None:
        """compose/grafana/provisioning is mounted at Grafana's provisioning path."""
        mounts = _bind_mounts(_services(compose)["grafana"])
        assert mounts["/etc/grafana/provisioning"][0] == COMPOSE_DIR / "grafana" / "provisioning"

    def test_dashboard_provider_reads_the_dashboards_mount(self, compose: dict[str, Any]) -> None:
        """The file provider's path is where ../dashboards is mounted, and it is read-only in the UI."""
        path = COMPOSE_DIR / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
        (provider,) = _load(path)["providers"]
        mounts = _bind_mounts(_services(compose)["grafana"])
        assert mounts[provider["options"]["path"]][0] == REPO / "dashboards"
        assert provider["allowUiUpdates"] is False

    def test_home_dashboard_is_a_provisioned_file(self, compose: dict[str, Any]) -> None:
        """The home dashboard path names a rendered dashboard inside the dashboards mount."""
        grafana = _services(compose)["grafana"]
        home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
        source, _ = _bind_mounts(grafana)[str(home.parent)]
        assert (source / home.name).is_file()

    def test_anonymous_users_can_only_view(self, compose: dict[str, Any]) -> None:
        """Anonymous access is on, with the Viewer role."""
        env = _services(compose)["grafana"]["environment"]
        assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
        assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"

    def test_no_admin_password_in_the_compose_file(self, compose: dict[str, Any]) -> None:
        """The admin password is never a literal: only GRAFANA_ADMIN_PASSWORD from the environment."""
        env = _services(compose)["grafana"]["environment"]
        assert not any(key.startswith("GF_SECURITY_ADMIN_PASSWORD") for key in env)
        assert env["GRAFANA_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"

    def test_entrypoint_wraps_the_image_entrypoint(self, compose: dict[str, Any]) -> None:
        """Grafana starts through the password script, which then runs the image's /run.sh."""
        grafana = _services(compose)["grafana"]
        script_target = next(t for t, (s, _) in _bind_mounts(grafana).items() if s == ENTRYPOINT)
        assert grafana["entrypoint"] == ["/bin/sh", script_target, "/run.sh"]


def _run_entrypoint(data_dir: Path, password: str | None = None) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "GF_PATHS_DATA": str(data_dir)}
    if password is not None:
        env["GRAFANA_ADMIN_PASSWORD"] = password
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "env"], env=env, capture_output=True, text=True, timeout=30, check=True
    )
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


class TestGrafanaPassword:
    def test_generated_at_first_start_into_the_data_volume(self, tmp_path: Path) -> None:
        """Without GRAFANA_ADMIN_PASSWORD a 24-character password is generated, owner-only, and used."""
        env = _run_entrypoint(tmp_path)
        secret = tmp_path / "admin-password"
        assert re.fullmatch(r"[A-Za-z0-9]{24}", secret.read_text())
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
        assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == str(secret)
        assert "GF_SECURITY_ADMIN_PASSWORD" not in env

    def test_kept_across_restarts(self, tmp_path: Path) -> None:
        """A second start reuses the stored password."""
        _run_entrypoint(tmp_path)
        first = (tmp_path / "admin-password").read_text()
        _run_entrypoint(tmp_path)
        assert (tmp_path / "admin-password").read_text() == first

    def test_differs_between_volumes(self, tmp_path: Path) -> None:
        """Two fresh volumes get different passwords (it is random, not a default)."""
        for volume in ("a", "b"):
            (tmp_path / volume).mkdir()
            _run_entrypoint(tmp_path / volume)
        first, second = ((tmp_path / v / "admin-password").read_text() for v in ("a", "b"))
        assert first != second

    def test_environment_variable_wins(self, tmp_path: Path) -> None:
        """GRAFANA_ADMIN_PASSWORD is used as it is, and nothing is generated."""
        env = _run_entrypoint(tmp_path, password="chosen-by-me")
        assert env["GF_SECURITY_ADMIN_PASSWORD"] == "chosen-by-me"
        assert "GRAFANA_ADMIN_PASSWORD" not in env
        assert not (tmp_path / "admin-password").exists()

    def test_empty_environment_variable_means_generate(self, tmp_path: Path) -> None:
        """An empty GRAFANA_ADMIN_PASSWORD (compose's default) generates a password."""
        env = _run_entrypoint(tmp_path, password="")
        assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == str(tmp_path / "admin-password")


# --------------------------------------------------------------------------------------------------
# A real Compose implementation: Debian's docker-compose 1.29 validates offline, without an engine.


def _docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found:
        return found
    msg = "docker-compose not found; install it with: bash scripts/install-system-deps.sh"
    if os.environ.get("CI", "").lower() in {"true", "1"}:
        pytest.fail(msg)
    pytest.skip(msg)


def _compose_config(compose_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_docker_compose(), "-f", str(compose_file), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"},
    )


@pytest.fixture
def broken_copy(tmp_path: Path) -> Path:
    """A copy of compose/ to break; returns its docker-compose.yml."""
    shutil.copytree(COMPOSE_DIR, tmp_path / "compose")
    return tmp_path / "compose" / "docker-compose.yml"


@pytest.mark.integration
class TestComposeSchema:
    def test_compose_file_is_valid(self) -> None:
        """`docker-compose config -q` accepts the compose file."""
        result = _compose_config(COMPOSE_FILE)
        assert result.returncode == 0, result.stderr

    def test_unknown_key_is_rejected(self, broken_copy: Path) -> None:
        """The validator rejects a service key the Compose schema does not have."""
        data = _load(broken_copy)
        data["services"]["prometheus"]["restart_policy"] = "always"
        broken_copy.write_text(yaml.safe_dump(data))
        result = _compose_config(broken_copy)
        assert result.returncode != 0
        assert "restart_policy" in result.stderr

    def test_bad_type_is_rejected(self, broken_copy: Path) -> None:
        """The validator rejects a value of the wrong type."""
        data = _load(broken_copy)
        data["services"]["grafana"]["ports"] = "127.0.0.1:3000:3000"
        broken_copy.write_text(yaml.safe_dump(data))
        result = _compose_config(broken_copy)
        assert result.returncode != 0
        assert "ports" in result.stderr
