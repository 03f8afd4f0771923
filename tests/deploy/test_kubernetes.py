"""deploy/k8s: every overlay renders with kustomize, passes `kubernetes-validate --strict`, and wires up as designed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import OVERLAYS, find, load_documents
from tests.deploy.tools import DEPLOY, find_tool, run

# A current Kubernetes release whose schemas kubernetes-validate ships.
KUBERNETES_VERSION = "1.35.0"
# Every ready TF Serving pod: the headless Service the gateways balance over and promote --all-replicas resolves.
REPLICAS_UPSTREAM = "dns:///tfserving-pods.tlserve.svc.cluster.local:8500"
VARIANTS = (*OVERLAYS, *(f"{overlay}+servicemonitor" for overlay in OVERLAYS))


def pod_spec(workload: dict) -> dict:
    if workload["kind"] == "CronJob":
        return workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if workload["kind"] == "Pod":
        return workload["spec"]
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str) -> dict:
    return next(item for item in pod_spec(workload)["containers"] if item["name"] == name)


@pytest.mark.parametrize("variant", VARIANTS)
def test_overlay_passes_strict_schema_validation(rendered: dict[str, Path], variant: str) -> None:
    output = run(
        [find_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, rendered[variant]], timeout=180
    )
    assert "passed for resource deployment/tfserving" in output
    assert "passed for resource cronjob/retrain-and-promote" in output


def test_strict_validation_rejects_an_unknown_field(rendered: dict[str, Path], tmp_path: Path) -> None:
    """Guards the check above: a typo in a manifest must fail it, not pass quietly."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(rendered["cpu"].read_text().replace("readOnlyRootFilesystem:", "readOnlyRootFilesytem:", 1))
    with pytest.raises(pytest.fail.Exception, match="readOnlyRootFilesytem"):
        run([find_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, broken], timeout=180)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitors_select_existing_service_ports(rendered: dict[str, Path], overlay: str) -> None:
    """kubernetes-validate has no schema for the Prometheus Operator's CRDs; check their references instead."""
    documents = load_documents(rendered[f"{overlay}+servicemonitor"])
    monitors = [doc for doc in documents if doc["kind"] == "ServiceMonitor"]
    assert {monitor["metadata"]["name"] for monitor in monitors} == {"gateway", "tfserving"}
    for monitor in monitors:
        assert monitor["metadata"]["namespace"] == "tlserve"
        # Exactly one Service each: the headless tfserving-pods must not double TF Serving's scrape targets.
        selector = monitor["spec"]["selector"]["matchLabels"]
        selected = [
            doc["metadata"]["name"]
            for doc in documents
            if doc["kind"] == "Service" and selector.items() <= doc["metadata"]["labels"].items()
        ]
        assert selected == [monitor["metadata"]["name"]]
        service = find(documents, "Service", monitor["metadata"]["name"])
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()
        port_names = {port["name"] for port in service["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in port_names
    assert find(documents, "ServiceMonitor", "tfserving")["spec"]["endpoints"][0]["path"] == (
        "/monitoring/prometheus/metrics"
    )
    # The gateway's /metrics takes an API key: Prometheus sends one from the gateway's own Secret.
    (gateway_endpoint,) = find(documents, "ServiceMonitor", "gateway")["spec"]["endpoints"]
    assert gateway_endpoint["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "tlserve-api-keys", "key": "metrics-key"},
    }
    gateway = find(documents, "Deployment", "gateway")
    keys = next(item for item in container(gateway, "gateway")["env"] if item["name"] == "TLSERVE_API_KEYS")
    assert keys["valueFrom"]["secretKeyRef"]["name"] == gateway_endpoint["authorization"]["credentials"]["name"]


def test_gpu_overlay_puts_tf_serving_and_retraining_on_gpu_nodes(rendered: dict[str, Path]) -> None:
    documents = load_documents(rendered["gpu"])
    for kind, name, container_name in (("Deployment", "tfserving", "tfserving"), ("CronJob", "retrain", "retrain")):
        workload = find(documents, kind, name)
        assert container(workload, container_name)["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod_spec(workload)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert pod_spec(workload)["tolerations"][0]["key"] == "nvidia.com/gpu"
    tfserving = find(documents, "Deployment", "tfserving")
    assert container(tfserving, "tfserving")["image"].endswith("-gpu")


def test_cpu_overlay_asks_for_no_gpu(rendered: dict[str, Path]) -> None:
    text = rendered["cpu"].read_text()
    assert "nvidia.com/gpu" not in text
    tfserving = find(load_documents(rendered["cpu"]), "Deployment", "tfserving")
    image = container(tfserving, "tfserving")["image"]
    assert image.startswith("tensorflow/serving:")
    assert not image.endswith("-gpu")


def test_tf_serving_reads_the_mounted_config_files(rendered: dict[str, Path]) -> None:
    documents = load_documents(rendered["gpu"])
    tfserving = find(documents, "Deployment", "tfserving")
    main = container(tfserving, "tfserving")
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in main["args"])
    assert flags["port"] == "8500"
    assert flags["rest_api_port"] == "8501"
    assert flags["enable_batching"] == "true"
    mounts = {mount["name"]: mount["mountPath"] for mount in main["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod_spec(tfserving)["volumes"]}
    config_map = find(documents, "ConfigMap", "tfserving-config")
    assert volumes["tfserving-config"]["configMap"]["name"] == config_map["metadata"]["name"]
    for flag in ("batching_parameters_file", "monitoring_config_file"):
        directory, _, key = flags[flag].rpartition("/")
        assert directory == mounts["tfserving-config"]
        assert key in config_map["data"]
    # start.sh (from the ConfigMap) serves $MODEL_BASE_PATH/models.config, /models in the image, and sets the flag.
    assert main["command"] == ["sh", f"{mounts['tfserving-config']}/start.sh"]
    assert "start.sh" in config_map["data"]
    assert mounts["models"] == "/models"
    assert "model_config_file" not in flags
    assert "model_config_file_poll_wait_seconds" not in flags
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "tlserve-models"
    ports = {port["name"]: port["port"] for port in find(documents, "Service", "tfserving")["spec"]["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}


def test_tf_serving_probes_check_the_model_and_the_grpc_health_service(rendered: dict[str, Path]) -> None:
    main = container(find(load_documents(rendered["gpu"]), "Deployment", "tfserving"), "tfserving")
    assert "--enable_grpc_healthcheck_service=true" in main["args"]
    # ready.sh checks for an AVAILABLE version (test_tfserving_scripts.py); GET /v1/models/demo alone does not.
    assert main["readinessProbe"]["exec"]["command"] == ["bash", "/etc/tfserving/ready.sh", "demo", "8501"]
    assert main["livenessProbe"]["grpc"]["port"] == 8500
    assert main["startupProbe"]["failureThreshold"] * main["startupProbe"]["periodSeconds"] >= 300


def test_gateway_runs_locked_down_with_probes_and_settings(rendered: dict[str, Path]) -> None:
    documents = load_documents(rendered["gpu"])
    gateway = find(documents, "Deployment", "gateway")
    main = container(gateway, "gateway")
    assert main["args"][:3] == ["serve", "--upstream", "$(TLSERVE_UPSTREAM)"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod_spec(gateway)["securityContext"]["runAsNonRoot"] is True
    assert len(pod_spec(gateway)["topologySpreadConstraints"]) == 2
    settings = find(documents, "ConfigMap", "gateway-env")
    assert main["envFrom"][0]["configMapRef"]["name"] == settings["metadata"]["name"]
    assert settings["data"]["TLSERVE_UPSTREAM"] == REPLICAS_UPSTREAM
    assert settings["data"]["TLSERVE_UPSTREAM_LB_POLICY"] == "round_robin"
    api_keys = next(item for item in main["env"] if item["name"] == "TLSERVE_API_KEYS")
    assert api_keys["valueFrom"]["secretKeyRef"] == {"name": "tlserve-api-keys", "key": "api-keys"}


def test_gateway_scales_and_survives_disruptions(rendered: dict[str, Path]) -> None:
    documents = load_documents(rendered["cpu"])
    hpa = find(documents, "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    assert hpa["spec"]["minReplicas"] >= 2
    pdb = find(documents, "PodDisruptionBudget", "gateway")
    gateway = find(documents, "Deployment", "gateway")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= gateway["spec"]["template"]["metadata"]["labels"].items()


def test_only_gateway_and_retrain_job_reach_tf_serving(rendered: dict[str, Path]) -> None:
    documents = load_documents(rendered["cpu"])
    policy = find(documents, "NetworkPolicy", "tfserving-ingress")
    tfserving = find(documents, "Deployment", "tfserving")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items()
        <= tfserving["spec"]["template"]["metadata"]["labels"].items()
    )
    allowed = [peer["podSelector"]["matchLabels"] for peer in policy["spec"]["ingress"][0]["from"]]
    gateway_labels = find(documents, "Deployment", "gateway")["spec"]["template"]["metadata"]["labels"]
    trainer_labels = find(documents, "CronJob", "retrain")["spec"]["jobTemplate"]["spec"]["template"]["metadata"][
        "labels"
    ]
    assert any(selector.items() <= gateway_labels.items() for selector in allowed)
    assert any(selector.items() <= trainer_labels.items() for selector in allowed)
    assert len(allowed) == 2


def test_retrain_cronjob_runs_documented_command_on_the_models_volume(rendered: dict[str, Path]) -> None:
    cronjob = find(load_documents(rendered["cpu"]), "CronJob", "retrain-and-promote")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    main = container(cronjob, "retrain")
    assert main["image"].startswith("tlserve-trainer:")
    assert main["args"][:2] == ["retrain", "/data"]
    assert "--promote-if-better" in main["args"]
    assert main["args"][-3:] == ["--server", "tfserving-pods:8500", "--all-replicas"]
    claims = {
        volume["persistentVolumeClaim"]["claimName"]
        for volume in pod_spec(cronjob)["volumes"]
        if "persistentVolumeClaim" in volume
    }
    assert claims == {"tlserve-models", "tlserve-training-data"}


@pytest.fixture(scope="module")
def admin_rendered(kubectl: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("admin") / "admin.yaml"
    output.write_text(run([kubectl, "kustomize", DEPLOY / "k8s" / "admin"]))
    return output


def test_admin_pod_validates_and_reaches_what_it_administers(rendered: dict[str, Path], admin_rendered: Path) -> None:
    run([find_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, admin_rendered], timeout=180)
    (admin,) = load_documents(admin_rendered)
    documents = load_documents(rendered["gpu"])
    claims = {doc["metadata"]["name"] for doc in documents if doc["kind"] == "PersistentVolumeClaim"}
    assert {volume["persistentVolumeClaim"]["claimName"] for volume in admin["spec"]["volumes"][:2]} <= claims
    assert admin["metadata"]["namespace"] == "tlserve"
    allowed = [
        peer["podSelector"]["matchLabels"]
        for peer in find(documents, "NetworkPolicy", "tfserving")["spec"]["ingress"][0]["from"]
    ]
    assert any(selector.items() <= admin["metadata"]["labels"].items() for selector in allowed)


def test_gateway_settings_in_the_configmap_are_real_settings(
    rendered: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings ignores unknown TLSERVE_* keys, so a misspelt one would silently do nothing: check each by name."""
    from service.gateway.settings import Settings

    data = find(load_documents(rendered["gpu"]), "ConfigMap", "gateway-env")["data"]
    fields = {f"TLSERVE_{name.upper()}" for name in Settings.model_fields}
    assert set(data) <= fields
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert (settings.upstream, settings.http_port, settings.grpc_port) == (REPLICAS_UPSTREAM, 8000, 8500)
    assert settings.upstream_lb_policy == "round_robin"
    # Issue 9: no hard-wired default model; the served models are named, and the only one is the default.
    from service.gateway.core.served_models import default_model

    assert settings.default_model is None
    assert settings.served_models == ("demo",)
    assert default_model(settings) == "demo"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_admin_pod_runs_the_retrain_jobs_image(rendered: dict[str, Path], admin_rendered: Path, overlay: str) -> None:
    """admin/ sets its image through a kustomization, like the overlays; by default both name the same image."""
    (admin,) = load_documents(admin_rendered)
    cronjob = find(load_documents(rendered[overlay]), "CronJob", "retrain-and-promote")
    assert container(admin, "admin")["image"] == container(cronjob, "retrain")["image"]
    assert container(admin, "admin")["image"] == "tlserve-trainer:0.1.0"


def test_admin_image_follows_its_kustomization(kubectl: Path, tmp_path: Path) -> None:
    """What `kustomize edit set image tlserve-trainer=...` writes into admin/kustomization.yaml reaches the pod."""
    admin_dir = tmp_path / "admin"
    shutil.copytree(DEPLOY / "k8s" / "admin", admin_dir)
    kustomization = yaml.safe_load((admin_dir / "kustomization.yaml").read_text())
    kustomization["images"] = [
        {"name": "tlserve-trainer", "newName": "registry.example/tlserve-trainer", "newTag": "7"}
    ]
    (admin_dir / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    (admin,) = yaml.safe_load_all(run([kubectl, "kustomize", admin_dir]))
    assert container(admin, "admin")["image"] == "registry.example/tlserve-trainer:7"


@pytest.mark.parametrize(("overlay", "replicas"), [("cpu", 1), ("gpu", 2)])
def test_tf_serving_replicas_and_their_disruption_budget(
    rendered: dict[str, Path], overlay: str, replicas: int
) -> None:
    documents = load_documents(rendered[overlay])
    tfserving = find(documents, "Deployment", "tfserving")
    assert tfserving["spec"]["replicas"] == replicas
    pdb = find(documents, "PodDisruptionBudget", "tfserving")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": "tfserving"}}}
    assert pdb["spec"]["selector"]["matchLabels"].items() <= tfserving["spec"]["template"]["metadata"]["labels"].items()
    # No HPA scales TF Serving (docs/deploy.md: a new pod loads for minutes and needs a GPU of its own).
    targets = [doc["spec"]["scaleTargetRef"] for doc in documents if doc["kind"] == "HorizontalPodAutoscaler"]
    autoscaled = [(target["kind"], target["name"]) for target in targets]
    assert ("Deployment", "gateway") in autoscaled  # the check below looks at real HPAs
    assert ("Deployment", "tfserving") not in autoscaled


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_headless_service_lists_every_ready_tf_serving_pod_for_the_gateway(
    rendered: dict[str, Path], overlay: str
) -> None:
    documents = load_documents(rendered[overlay])
    headless = find(documents, "Service", "tfserving-pods")
    tfserving = find(documents, "Deployment", "tfserving")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is False  # a loading pod gets no traffic, no reload
    assert headless["spec"]["selector"].items() <= tfserving["spec"]["template"]["metadata"]["labels"].items()
    (port,) = headless["spec"]["ports"]
    container_ports = {item["name"]: item["containerPort"] for item in container(tfserving, "tfserving")["ports"]}
    assert (port["port"], container_ports[port["targetPort"]]) == (8500, 8500)
    # The gateway's dns:/// target names this Service in the namespace it is rendered into.
    upstream = find(documents, "ConfigMap", "gateway-env")["data"]["TLSERVE_UPSTREAM"]
    host = upstream.removeprefix("dns:///").rpartition(":")[0]
    assert host.split(".")[:2] == [headless["metadata"]["name"], headless["metadata"]["namespace"]]
    # The NetworkPolicy selects the pods themselves, so traffic to their own addresses is allowed on 8500.
    policy = find(documents, "NetworkPolicy", "tfserving-ingress")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= headless["spec"]["selector"].items()
    assert {"port": 8500, "protocol": "TCP"} in policy["spec"]["ingress"][0]["ports"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_retrain_cronjob_arguments_parse_with_the_real_cli(
    rendered: dict[str, Path], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CronJob's args are a promoting `tlserve retrain` against TF Serving, writing only to writable mounts."""
    from promotion import cli
    from tlserve.cli import build_parser

    cronjob = find(load_documents(rendered[overlay]), "CronJob", "retrain-and-promote")
    main = container(cronjob, "retrain")
    for item in main.get("env", []):
        monkeypatch.setenv(item["name"], item["value"])  # argparse defaults read the container's environment
    args = build_parser().parse_args(main["args"])  # SystemExit 2 on any flag tlserve does not know
    assert args.handler is cli._retrain
    assert (args.data, args.name, args.promote_if_better, args.keep) == (Path("/data"), "demo", True, 5)
    assert (args.offline, args.server, args.all_replicas) == (False, "tfserving-pods:8500", True)
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    writable = {mount["mountPath"] for mount in main["volumeMounts"] if not mount.get("readOnly", False)}
    for path in (args.runs_dir, args.models_dir):
        assert any(Path(path).is_relative_to(mount) for mount in writable), f"{path} is not on a writable volume"
    assert Path(args.runs_dir).is_relative_to("/tmp")
    assert Path(args.models_dir) == Path("/models")


def test_admin_pod_promotes_on_every_replica(admin_rendered: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`tlserve promote demo 7` typed in the admin pod goes to every address of the headless Service."""
    from tlserve.cli import build_parser

    (admin,) = load_documents(admin_rendered)
    for item in container(admin, "admin")["env"]:
        monkeypatch.setenv(item["name"], item["value"])
    for argv in (["promote", "demo", "7"], ["rollback", "demo"]):
        args = build_parser().parse_args(argv)
        assert (args.server, args.all_replicas) == ("tfserving-pods:8500", True)
