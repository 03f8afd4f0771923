"""deploy/compose.yaml (+ compose.cpu.yaml): parses, points at files that exist, and follows the port contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import DEPLOY, REPO_ROOT

COMPOSE = DEPLOY / "compose.yaml"
COMPOSE_CPU = DEPLOY / "compose.cpu.yaml"


class Reset:
    """Compose's `!reset` tag: drop the value inherited from the files before."""


class ComposeLoader(yaml.SafeLoader):
    """PyYAML's safe loader plus the merge tags Docker Compose understands."""


ComposeLoader.add_constructor("!reset", lambda loader, node: Reset())


def load(path: Path) -> dict[str, Any]:
    return yaml.load(path.read_text(), Loader=ComposeLoader)


def merge(base: Any, override: Any) -> Any:
    """Compose's rule for -f a -f b: mappings merge key by key, `!reset` removes, anything else replaces."""
    if isinstance(override, Reset):
        return Reset()
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key), value)
        return {key: value for key, value in merged.items() if not isinstance(value, Reset)}
    return override


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


def bind_sources(service: dict[str, Any]) -> list[Path]:
    """Host paths of bind mounts (short syntax "src:dst[:mode]" whose src is a path, not a named volume)."""
    sources = []
    for volume in service.get("volumes", []):
        source = volume.split(":", 1)[0]
        if source.startswith((".", "/")):
            sources.append((DEPLOY / source).resolve())
    return sources


def test_every_bind_mount_and_build_context_exists(compose: dict[str, Any]) -> None:
    checked = 0
    for name, service in compose["services"].items():
        for source in bind_sources(service):
            assert source.exists(), f"service {name} mounts {source}, which does not exist"
            checked += 1
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert (context / "Dockerfile").is_file()
            assert f"AS {service['build']['target']}" in (context / "Dockerfile").read_text()
    assert checked >= 6


def test_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"]


def test_tf_serving_gets_config_batching_monitoring_and_a_gpu(compose: dict[str, Any]) -> None:
    tfserving = compose["services"]["tfserving"]
    assert tfserving["image"].startswith("tensorflow/serving:")
    assert tfserving["image"].endswith("-gpu")
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in tfserving["command"])
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in tfserving["volumes"]}
    # start.sh serves /models/models.config (the repository's own, relative base_paths made absolute).
    assert tfserving["entrypoint"] == ["sh", "/etc/tfserving/start.sh"]
    assert Path(mounts["/etc/tfserving/start.sh"]).name == "start.sh"
    # The live models.config is written by the first publish (untracked); until then start.sh serves the example.
    assert (DEPLOY / mounts["/models"] / "models.config.example").is_file()
    assert (DEPLOY / mounts["/models"]).resolve() == REPO_ROOT / "models"
    # start.sh sets the config file; polling it would race the reloads promote sends (docs/deploy.md).
    assert "model_config_file" not in flags
    assert "model_config_file_poll_wait_seconds" not in flags
    assert (flags["port"], flags["rest_api_port"]) == ("8500", "8501")
    assert flags["enable_batching"] == "true"
    for flag, expected in (
        ("batching_parameters_file", "batching_parameters.txt"),
        ("monitoring_config_file", "monitoring_config.txt"),
    ):
        assert Path(mounts[flags[flag]]).name == expected
    (device,) = tfserving["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    assert tfserving["healthcheck"]["test"] == ["CMD", "bash", "/etc/tfserving/ready.sh", "demo", "8501"]
    assert Path(mounts["/etc/tfserving/ready.sh"]).name == "ready.sh"


def test_gateway_follows_the_port_and_upstream_contract(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    assert gateway["command"] == [
        "serve",
        "--upstream",
        "tfserving:8500",
        "--http-port",
        "8000",
        "--grpc-port",
        "8500",
    ]
    assert gateway["environment"]["TLSERVE_UPSTREAM"] == "tfserving:8500"
    assert {"8000:8000", "8500:8500"} <= set(gateway["ports"])
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])


def test_prometheus_and_grafana_get_their_provisioning(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert (DEPLOY / "monitoring" / "prometheus" / "prometheus.yml").is_file()
    grafana = compose["services"]["grafana"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith("/etc/grafana/dashboards/")
    assert (DEPLOY / "monitoring" / "grafana" / "dashboards" / Path(home).name).is_file()


def test_prometheus_sends_the_gateway_api_key_from_a_compose_secret(compose: dict[str, Any]) -> None:
    """prometheus.yml's credentials_file (relative to /etc/prometheus) is where compose mounts the secret; unset,
    the secret is the repository's empty placeholder (a gateway without keys ignores the empty bearer)."""
    scrape = yaml.safe_load((DEPLOY / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    gateway_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "gateway")
    credentials = Path("/etc/prometheus") / gateway_job["authorization"]["credentials_file"]
    (mount,) = compose["services"]["prometheus"]["secrets"]
    assert Path(mount["target"]) == credentials
    source = compose["secrets"][mount["source"]]["file"]
    assert source.startswith("${TLSERVE_METRICS_API_KEY_FILE:-")
    placeholder = DEPLOY / source.removeprefix("${TLSERVE_METRICS_API_KEY_FILE:-").removesuffix("}")
    assert placeholder.resolve() == (DEPLOY / "monitoring" / "prometheus" / credentials.relative_to("/etc/prometheus"))
    assert placeholder.read_bytes() == b""


def test_the_gateway_names_the_served_models_instead_of_a_default_model(compose: dict[str, Any]) -> None:
    environment = compose["services"]["gateway"]["environment"]
    assert "TLSERVE_DEFAULT_MODEL" not in environment
    assert environment["TLSERVE_SERVED_MODELS"] == "${TLSERVE_SERVED_MODELS:-demo}"


def test_cpu_variant_drops_the_gpu_and_keeps_the_rest(compose: dict[str, Any]) -> None:
    merged = merge(compose, load(COMPOSE_CPU))
    tfserving = merged["services"]["tfserving"]
    assert "deploy" not in tfserving
    assert tfserving["image"].startswith("tensorflow/serving:")
    assert not tfserving["image"].endswith("-gpu")
    assert tfserving["command"] == compose["services"]["tfserving"]["command"]
    assert merged["services"].keys() == compose["services"].keys()


def test_gateway_environment_names_real_settings(compose: dict[str, Any]) -> None:
    from service.gateway.settings import Settings

    fields = {f"TLSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(compose["services"]["gateway"]["environment"]) <= fields


def test_tf_serving_runs_with_the_same_flags_in_compose_and_kubernetes(
    compose: dict[str, Any], rendered: dict[str, Path]
) -> None:
    from tests.deploy.conftest import find, load_documents

    deployment = find(load_documents(rendered["gpu"]), "Deployment", "tfserving")
    (main,) = (item for item in deployment["spec"]["template"]["spec"]["containers"] if item["name"] == "tfserving")
    assert compose["services"]["tfserving"]["command"] == main["args"]
    assert compose["services"]["tfserving"]["entrypoint"] == main["command"]
    assert compose["services"]["tfserving"]["healthcheck"]["test"][1:] == main["readinessProbe"]["exec"]["command"]
