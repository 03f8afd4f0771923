"""Version transitions: new versions without restart, broken versions never replace good ones, label rules."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import grpc
import pytest
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_status_pb2, model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from tests.conftest import random_images
from tests.support.modelserver import predict_request, running_model_server, wait_until_available
from tlserve.processes import wait_until

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
END = get_model_status_pb2.ModelVersionStatus.END


def config_text(policy: str, labels: dict[str, int] | None = None) -> str:
    label_lines = "".join(f'    version_labels {{ key: "{k}" value: {v} }}\n' for k, v in (labels or {}).items())
    return (
        'model_config_list {\n  config {\n    name: "demo"\n    base_path: "demo"\n    model_platform: "tensorflow"\n'
        f"    model_version_policy {{ {policy} }}\n{label_lines}  }}\n}}\n"
    )


def reload_request(models_dir: Path, policy: str, labels: dict[str, int] | None = None):
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_text(policy, labels), config)
    config.model_config_list.config[0].base_path = str(models_dir / "demo")
    return model_management_pb2.ReloadConfigRequest(config=config)


def publish(exported_version: Path, models_dir: Path, version: int, *, break_it: bool = False) -> None:
    """Drop a version in the way training/ does: a staging copy renamed into place."""
    staging = models_dir / "demo" / f".staging-{version}"
    shutil.copytree(exported_version, staging)
    if break_it:
        graph = staging / "saved_model.pb"
        graph.write_bytes(graph.read_bytes()[:100])
    staging.rename(models_dir / "demo" / str(version))


def replace_atomically(path: Path, data: bytes) -> None:
    """Write `data` to a temp file in the same directory and os.replace it over `path`.

    The server's pollers read these files every 0.2 s; a plain write_text/copy would let them see a truncated file
    (a half-written models.config unloads demo, a half-copied saved_model.pb is one more failed load).
    """
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(temp, path)


def states(server, name: str = "demo") -> dict[int, int]:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = name
    response = server.model_stub().GetModelStatus(request, timeout=30)
    return {s.version: s.state for s in response.model_version_status}


def served_version(server, **spec) -> int:
    response = server.prediction_stub().Predict(predict_request(random_images(1), **spec), timeout=30)
    return response.model_spec.version.value


def test_new_version_is_served_without_restart_and_old_one_unloaded(model_repo, exported_version):
    models_dir = model_repo(versions=(1,))
    with running_model_server(models_dir) as server:
        assert served_version(server) == 1
        publish(exported_version, models_dir, 2)
        wait_until_available(server.target, "demo", version=2)
        assert served_version(server) == 2
        wait_until(lambda: states(server).get(1) == END, timeout_s=60, what="version 1 END")
        assert states(server) == {2: AVAILABLE, 1: END}


def test_broken_version_never_replaces_the_working_one(model_repo, exported_version):
    models_dir = model_repo(versions=(1,))
    with running_model_server(models_dir) as server:
        publish(exported_version, models_dir, 2, break_it=True)
        wait_until(lambda: states(server).get(2) == END, timeout_s=60, what="version 2 END")
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "demo"
        request.model_spec.version.value = 2
        failed = server.model_stub().GetModelStatus(request, timeout=30).model_version_status[0]
        assert failed.status.error_code != 0
        assert "Failed to load demo version 2" in failed.status.error_message
        assert states(server)[1] == AVAILABLE
        assert served_version(server) == 1
        with pytest.raises(grpc.RpcError) as caught:
            served_version(server, version=2)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_label_to_unloaded_version_is_refused_and_old_config_keeps_serving(model_repo, exported_version):
    models_dir = model_repo(versions=(1,))
    (models_dir / "models.config").write_text(config_text("specific { versions: 1 }", {"stable": 1}))
    with running_model_server(models_dir) as server:
        publish(exported_version, models_dir, 2)
        stub = server.model_stub()
        with pytest.raises(grpc.RpcError) as caught:
            stub.HandleReloadConfigRequest(
                reload_request(models_dir, "specific { versions: 2 }", {"stable": 2}), timeout=60
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert caught.value.details() == (
            "Request to assign label to version 2 of model demo, which is not currently available for inference"
        )
        assert served_version(server, version_label="stable") == 1
        assert states(server) == {1: AVAILABLE}


def test_two_step_label_move_keeps_serving_and_ends_on_new_version(model_repo, exported_version):
    models_dir = model_repo(versions=(1,))
    (models_dir / "models.config").write_text(config_text("specific { versions: 1 }", {"stable": 1}))
    with running_model_server(models_dir) as server:
        publish(exported_version, models_dir, 2)
        stub = server.model_stub()
        step1 = stub.HandleReloadConfigRequest(
            reload_request(models_dir, "specific { versions: 1 versions: 2 }", {"stable": 1}), timeout=60
        )
        assert step1.status.error_code == 0
        wait_until_available(server.target, "demo", version=2)
        assert served_version(server, version_label="stable") == 1
        stub.HandleReloadConfigRequest(
            reload_request(models_dir, "specific { versions: 2 }", {"stable": 2}), timeout=60
        )
        assert served_version(server, version_label="stable") == 2
        assert states(server) == {2: AVAILABLE, 1: END}


def test_reload_without_a_model_unloads_it(model_repo):
    models_dir = model_repo(versions=(1,))
    with running_model_server(models_dir) as server:
        empty = model_management_pb2.ReloadConfigRequest()
        empty.config.model_config_list.SetInParent()
        server.model_stub().HandleReloadConfigRequest(empty, timeout=60)
        with pytest.raises(grpc.RpcError) as caught:
            served_version(server)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_reload_listing_a_model_twice_is_invalid_argument(model_repo):
    models_dir = model_repo(versions=(1,))
    with running_model_server(models_dir) as server:
        request = reload_request(models_dir, "latest { num_versions: 1 }")
        request.config.model_config_list.config.append(request.config.model_config_list.config[0])
        with pytest.raises(grpc.RpcError) as caught:
            server.model_stub().HandleReloadConfigRequest(request, timeout=60)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == "Illegal to list model demo multiple times in config list"
        assert served_version(server) == 1


def test_polled_config_file_change_is_applied(model_repo, exported_version):
    models_dir = model_repo(versions=(1, 2))
    config_file = models_dir / "models.config"
    config_file.write_text(config_text("specific { versions: 1 }"))
    with running_model_server(
        models_dir, model_config_file=config_file, model_config_file_poll_wait_seconds=0.2
    ) as server:
        assert served_version(server) == 1
        replace_atomically(config_file, config_text("specific { versions: 1 versions: 2 }").encode())
        wait_until_available(server.target, "demo", version=2)
        assert served_version(server) == 2


def test_polled_config_file_with_label_to_unloaded_version_is_not_applied(model_repo, exported_version):
    models_dir = model_repo(versions=(1, 2))
    config_file = models_dir / "models.config"
    config_file.write_text(config_text("specific { versions: 1 }", {"stable": 1}))
    with running_model_server(
        models_dir, model_config_file=config_file, model_config_file_poll_wait_seconds=0.2
    ) as server:
        replace_atomically(config_file, config_text("specific { versions: 2 }", {"stable": 2}).encode())
        wait_until(lambda: server.server.last_config_error, timeout_s=60, what="a config error")
        assert "not currently available for inference" in server.server.last_config_error
        assert server.server.manager.snapshot()["demo"]["labels"] == {"stable": 1}
        assert served_version(server, version_label="stable") == 1


def test_failed_version_is_retried_and_loads_once_repaired(model_repo, exported_version):
    models_dir = model_repo(versions=(1,))
    # Retries every 0.2 s and (practically) never gives up, so the repair below cannot miss the retry budget
    # however slowly this machine notices END; the default 5 retries would be spent in about a second.
    with running_model_server(models_dir, load_retry_interval_s=0.2, max_num_load_retries=1_000_000) as server:
        publish(exported_version, models_dir, 2, break_it=True)  # like a copy still in progress
        wait_until(lambda: states(server).get(2) == END, timeout_s=60, what="version 2 END")
        replace_atomically(
            models_dir / "demo" / "2" / "saved_model.pb", (exported_version / "saved_model.pb").read_bytes()
        )
        wait_until_available(server.target, "demo", version=2)
        assert served_version(server) == 2


def test_lenient_label_flag_allows_new_labels_but_not_moving_one_to_an_unloaded_version(model_repo, exported_version):
    models_dir = model_repo(versions=(1,))
    (models_dir / "models.config").write_text(config_text("specific { versions: 1 }", {"stable": 1}))
    with running_model_server(models_dir, allow_version_labels_for_unavailable_models=True) as server:
        publish(exported_version, models_dir, 2)
        stub = server.model_stub()
        stub.HandleReloadConfigRequest(
            reload_request(models_dir, "specific { versions: 1 versions: 2 }", {"stable": 1, "canary": 7}), timeout=60
        )
        assert server.server.manager.snapshot()["demo"]["labels"] == {"stable": 1, "canary": 7}
        with pytest.raises(grpc.RpcError) as caught:
            stub.HandleReloadConfigRequest(
                reload_request(models_dir, "specific { versions: 1 versions: 2 }", {"stable": 9}), timeout=60
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert served_version(server, version_label="stable") == 1
