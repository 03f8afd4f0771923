"""Session fixtures for the deploy checks: tool paths and rendered Kubernetes overlays."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from tests.deploy.tools import DEPLOY, extract_kubectl, run

OVERLAYS = ("cpu", "gpu")
SERVICEMONITOR_COMPONENT = DEPLOY / "k8s" / "components" / "servicemonitor"


@pytest.fixture(scope="session")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_kubectl(tmp_path_factory.mktemp("kubectl"))


@pytest.fixture(scope="session")
def rendered(kubectl: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each overlay rendered by `kubectl kustomize`, and each overlay plus the ServiceMonitor component."""
    out_dir = tmp_path_factory.mktemp("rendered")
    outputs: dict[str, Path] = {}
    for overlay in OVERLAYS:
        outputs[overlay] = out_dir / f"{overlay}.yaml"
        outputs[overlay].write_text(run([kubectl, "kustomize", DEPLOY / "k8s" / "overlays" / overlay]))
        # What docs/deploy.md tells operators with the Prometheus Operator to write.
        with_monitor = out_dir / f"{overlay}+servicemonitor"
        with_monitor.mkdir()
        (with_monitor / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    # kustomize accepts only relative paths here.
                    "resources": [os.path.relpath(DEPLOY / "k8s" / "overlays" / overlay, with_monitor)],
                    "components": [os.path.relpath(SERVICEMONITOR_COMPONENT, with_monitor)],
                }
            )
        )
        outputs[f"{overlay}+servicemonitor"] = out_dir / f"{overlay}+servicemonitor.yaml"
        outputs[f"{overlay}+servicemonitor"].write_text(run([kubectl, "kustomize", with_monitor]))
    return outputs


def load_documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(documents: list[dict], kind: str, name: str) -> dict:
    """The one `kind` named `name`, or else the one whose name starts with it (generated ConfigMaps get a hash)."""
    of_kind = [doc for doc in documents if doc["kind"] == kind]
    matches = [doc for doc in of_kind if doc["metadata"]["name"] == name] or [
        doc for doc in of_kind if doc["metadata"]["name"].startswith(name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name}, found {[doc['metadata']['name'] for doc in matches]}"
    return matches[0]
