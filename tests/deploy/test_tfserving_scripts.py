"""deploy/tfserving/start.sh and ready.sh, run here with this machine's sh/bash against stand-ins.

start.sh runs a fake `tensorflow_model_server` (there is no binary here); ready.sh asks a stand-in HTTP server
that answers like TF Serving's model status URL. Neither runs inside the tensorflow/serving image here.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
from google.protobuf import json_format, text_format

from tests.deploy.tools import DEPLOY, REPO_ROOT

START = DEPLOY / "tfserving" / "start.sh"
READY = DEPLOY / "tfserving" / "ready.sh"
FAKE_SERVER = '#!/bin/sh\nprintf "%s\\n" "$@" > "$FAKE_OUT/args"\n'


def parse_config(text: str):
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


def run_start(tmp_path: Path, config_text: str, *flags: str, file_name: str = "models.config") -> tuple[list[str], str]:
    """start.sh on `config_text` as <repo>/`file_name`: (flags TF Serving got, the config file it was given)."""
    repository = tmp_path / "models"
    repository.mkdir()
    (repository / file_name).write_text(config_text)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tensorflow_model_server"
    fake.write_text(FAKE_SERVER)
    fake.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "MODEL_BASE_PATH": str(repository),
        "TMPDIR": str(tmp_path),
        "FAKE_OUT": str(tmp_path),
    }
    subprocess.run(["sh", START, *flags], env=env, check=True, capture_output=True, timeout=30)
    args = (tmp_path / "args").read_text().splitlines()
    config_flag = next(arg for arg in args if arg.startswith("--model_config_file="))
    return args, Path(config_flag.split("=", 1)[1]).read_text()


def test_start_serves_the_tracked_example_with_the_paths_promote_sends(tmp_path: Path) -> None:
    from tlserve.models_config import absolute_config

    tracked = (REPO_ROOT / "models" / "models.config.example").read_text()
    args, served = run_start(tmp_path, tracked, "--port=8500", "--rest_api_port=8501")
    assert args[1:] == ["--port=8500", "--rest_api_port=8501"]
    (model,) = parse_config(served).model_config_list.config
    assert model.base_path == f"{tmp_path / 'models'}/demo"
    # What `tlserve promote --server-models-dir <repository>` sends in its reload: the same ModelServerConfig.
    assert parse_config(served) == absolute_config(parse_config(tracked), tmp_path / "models")


def test_start_keeps_absolute_paths_and_uris_and_labels(tmp_path: Path) -> None:
    from tlserve.models_config import absolute_config, render_config

    config = parse_config(
        """model_config_list {
          config { name: "a" base_path: "a" model_platform: "tensorflow"
                   model_version_policy { specific { versions: 3 versions: 4 } }
                   version_labels { key: "stable" value: 3 } version_labels { key: "canary" value: 4 } }
          config { name: "b" base_path: "/srv/models/b" model_platform: "tensorflow" }
          config { name: "c" base_path: "gs://bucket/c" model_platform: "tensorflow" }
          config { name: "d" base_path: "nested/d" model_platform: "tensorflow" }
        }"""
    )
    # The file exactly as tlserve writes it, and a hand-written single-quoted variant.
    written = render_config(config)
    for case, text in (("written", written), ("quoted", written.replace('"', "'"))):
        (tmp_path / case).mkdir()
        _, served = run_start(tmp_path / case, text)
        expected = absolute_config(config, tmp_path / case / "models")
        # absolute_config treats a URI as a relative path ("<root>/gs:/bucket/c"); start.sh keeps it.
        expected.model_config_list.config[2].base_path = "gs://bucket/c"
        assert parse_config(served) == expected, case
        paths = [model.base_path for model in parse_config(served).model_config_list.config]
        root = tmp_path / case / "models"
        assert paths == [f"{root}/a", "/srv/models/b", "gs://bucket/c", f"{root}/nested/d"]


def test_start_serves_the_example_until_a_first_publish_writes_models_config(tmp_path: Path) -> None:
    tracked = (REPO_ROOT / "models" / "models.config.example").read_text()
    _, served = run_start(tmp_path, tracked, file_name="models.config.example")
    (model,) = parse_config(served).model_config_list.config
    assert model.base_path == f"{tmp_path / 'models'}/demo"


def test_kubernetes_seed_is_the_tracked_example() -> None:
    """One convention everywhere: the seed Kubernetes copies to the volume is models/models.config.example's content."""
    seed = parse_config((DEPLOY / "tfserving" / "models.config").read_text())
    tracked = parse_config((REPO_ROOT / "models" / "models.config.example").read_text())
    assert seed == tracked
    (model,) = seed.model_config_list.config
    assert not Path(model.base_path).is_absolute()


class ModelStatus(BaseHTTPRequestHandler):
    """Answers GET /v1/models/demo like TF Serving: JSON of GetModelStatusResponse, or 404 for other models."""

    states: ClassVar[list[str]] = []
    # Set: keep the connection open after the answer until the test sets the event (a server that ignores
    # `Connection: close`).
    hold_open: ClassVar[threading.Event | None] = None

    def do_GET(self) -> None:
        from tensorflow_serving.apis import get_model_status_pb2

        if self.path != "/v1/models/demo":
            body = b'{ "error": "Servable not found for request: Latest(other)" }'
            self.send_response(404)
        else:
            response = get_model_status_pb2.GetModelStatusResponse()
            for version, state in enumerate(self.states, start=1):
                status = response.model_version_status.add(version=version)
                status.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
            body = json_format.MessageToJson(response, always_print_fields_with_no_presence=True).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
        if self.hold_open is not None:
            self.wfile.flush()
            self.hold_open.wait(timeout=60)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def status_port() -> Iterator[int]:
    # Imported before serving: the first import pulls in TensorFlow's protos and takes seconds.
    from tensorflow_serving.apis import get_model_status_pb2  # noqa: F401

    server = ThreadingHTTPServer(("127.0.0.1", 0), ModelStatus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def ready(model: str, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", READY, model, str(port)], capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(
    ("states", "is_ready"),
    [
        (["AVAILABLE"], True),
        (["END", "AVAILABLE"], True),
        (["AVAILABLE", "LOADING"], True),
        (["LOADING"], False),
        (["END"], False),
        (["START"], False),
        ([], False),
    ],
)
def test_ready_only_while_a_version_is_available(status_port: int, states: list[str], is_ready: bool) -> None:
    ModelStatus.states = states
    result = ready("demo", status_port)
    assert (result.returncode == 0) is is_ready, result.stderr


def test_not_ready_for_an_unknown_model_or_no_server(status_port: int) -> None:
    ModelStatus.states = ["AVAILABLE"]
    unknown = ready("other", status_port)
    assert unknown.returncode != 0
    assert "404" in unknown.stderr
    with socket_closed() as port:
        assert ready("demo", port).returncode != 0


@contextlib.contextmanager
def socket_closed() -> Iterator[int]:
    """A local port bound but not listening: connections to it are refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        yield int(bound.getsockname()[1])


def test_ready_does_not_wait_for_the_server_to_close(status_port: int) -> None:
    """The answer is read line by line: ready as soon as AVAILABLE arrives, with the connection still open."""
    ModelStatus.states = ["AVAILABLE"]
    released = threading.Event()
    ModelStatus.hold_open = released
    try:
        result = ready("demo", status_port)
        assert not released.is_set()
        assert result.returncode == 0, result.stderr
    finally:
        released.set()
        ModelStatus.hold_open = None
