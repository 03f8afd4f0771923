"""The `tlserve predict` clients in-process: answers parsed, errors classified (no server needed)."""

from __future__ import annotations

import argparse
import re

import httpx
import numpy as np
import pytest

from service import client
from service.gateway import cli


def json_answer(request: httpx.Request) -> httpx.Response:
    assert request.url.path == "/predict"
    assert request.url.params["top_k"] == "2"
    assert request.url.params["model"] == "demo"
    assert b'filename="cat.png"' in request.read()
    top_k = [{"label": "cat", "score": 0.75}, {"label": "dog", "score": 0.2}]
    body = {"model": "demo", "version": 3, "predictions": [{"label": "cat", "score": 0.75, "top_k": top_k}]}
    return httpx.Response(200, json=body)


def test_http_client_sends_multipart_and_reads_top_k():
    with client.HttpClient("http://gw", model="demo", transport=httpx.MockTransport(json_answer)) as http:
        prediction = http.predict(b"png bytes", filename="cat.png", top_k=2)
    assert prediction == client.Prediction("demo", 3, (client.Scored("cat", 0.75), client.Scored("dog", 0.2)))


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(400, client.RejectedImage), (413, client.RejectedImage), (404, client.ServerError), (503, client.ServerError)],
)
def test_http_client_classifies_error_answers(status, error_class):
    body = {"error": {"code": "some_code", "message": "what went wrong"}}
    transport = httpx.MockTransport(lambda request: httpx.Response(status, json=body))
    with client.HttpClient("http://gw", transport=transport) as http, pytest.raises(error_class) as caught:
        http.predict(b"x")
    assert str(caught.value) == f"HTTP {status} some_code: what went wrong"


def test_http_client_reports_unreachable_server_as_server_error():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    unreachable = pytest.raises(client.ServerError, match="cannot reach http://gw:1: Connection refused")
    with client.HttpClient("http://gw:1", transport=httpx.MockTransport(refuse)) as http, unreachable:
        http.predict(b"x")


def predict_response(scores: np.ndarray, classes: list[list[bytes]], *, packed: bool):
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2

    def shape(rows: int, cols: int):
        dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=rows), tensor_shape_pb2.TensorShapeProto.Dim(size=cols)]
        return tensor_shape_pb2.TensorShapeProto(dim=dims)

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "demo"
    response.model_spec.version.value = 7
    rows, cols = scores.shape
    score_tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape(rows, cols))
    if packed:
        score_tensor.tensor_content = scores.astype("<f4").tobytes()
    else:
        score_tensor.float_val.extend(scores.ravel().tolist())
    response.outputs["scores"].CopyFrom(score_tensor)
    labels = [label for row in classes for label in row]
    response.outputs["classes"].CopyFrom(
        tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape(rows, cols), string_val=labels)
    )
    return response


@pytest.mark.parametrize("packed", [True, False], ids=["tensor_content", "float_val"])
def test_grpc_answer_is_read_from_either_float_encoding(packed):
    scores = np.array([[0.5, 0.25, 0.125], [0.75, 0.125, 0.0625]], dtype=np.float32)
    classes = [[b"a", b"b", b"c"], [b"c", b"a", b"b"]]
    predictions = client.predictions_from_response(predict_response(scores, classes, packed=packed), top_k=2)
    assert predictions == [
        client.Prediction("demo", 7, (client.Scored("a", 0.5), client.Scored("b", 0.25))),
        client.Prediction("demo", 7, (client.Scored("c", 0.75), client.Scored("a", 0.125))),
    ]


def test_grpc_answer_with_mismatched_outputs_is_a_server_error():
    response = predict_response(np.array([[0.5, 0.5]], dtype=np.float32), [[b"a", b"b"]], packed=False)
    response.outputs["scores"].float_val.append(0.1)
    with pytest.raises(client.ServerError, match="malformed answer"):
        client.predictions_from_response(response, top_k=2)


def test_predict_request_is_a_plain_tf_serving_request():
    import tensorflow as tf

    request = client.predict_request("demo", [b"one", b"two"])
    assert request.model_spec.name == "demo"
    assert request.model_spec.signature_name == "serving_default"
    assert tf.make_ndarray(request.inputs["image_bytes"]).tolist() == [b"one", b"two"]


def test_prediction_line_lists_labels_best_first():
    prediction = client.Prediction("demo", 2, (client.Scored("cat", 0.97123), client.Scored("dog", 0.02)))
    assert cli.format_prediction("a.png", prediction) == "a.png  cat 0.9712  dog 0.0200  (demo v2)"


@pytest.mark.parametrize("target", ["localhost", "localhost:", ":8500", "host:99999", "host:http", "[::1]"])
def test_malformed_host_port_is_a_command_error(target):
    with pytest.raises(cli.CommandError, match=f"^--grpc expected HOST:PORT, got '{re.escape(target)}'$"):
        cli.split_host_port(target, flag="--grpc")


def test_host_port_splits_names_and_bracketed_ipv6():
    assert cli.split_host_port("tfserving-pods:8500") == ("tfserving-pods", 8500)
    assert cli.split_host_port("[::1]:8500") == ("::1", 8500)


@pytest.mark.parametrize("text", ["0", "-3", "65536", "eighty"])
def test_port_flag_rejects_non_ports(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli._port(text)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "soon"])
def test_predict_timeout_must_be_a_positive_number_of_seconds(text, capsys):
    from tlserve.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "any.png", "--timeout", text])
    assert exit_info.value.code == 2
    assert "--timeout" in capsys.readouterr().err


def test_http_client_adds_the_missing_scheme():
    with client.HttpClient("gw:8000/") as http:
        assert http.url == "http://gw:8000"


def test_http_client_reports_a_foreign_answer_as_server_error():
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="<html>hello</html>"))
    with (
        client.HttpClient("http://gw", transport=transport) as http,
        pytest.raises(client.ServerError, match="did not answer like a tlserve gateway"),
    ):
        http.predict(b"x")


def test_http_client_sends_the_api_key_header():
    seen = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen["key"] = request.headers.get("x-api-key")
        return json_answer(request)

    with client.HttpClient("http://gw", model="demo", api_key="s3cret", transport=httpx.MockTransport(answer)) as http:
        http.predict(b"png bytes", filename="cat.png", top_k=2)
    assert seen["key"] == "s3cret"


@pytest.mark.parametrize("top_k", [0, 6, 9, True])
def test_both_clients_refuse_a_top_k_outside_the_one_rule(top_k):
    # Issue 9.7: `--top-k 9` was a 422 over HTTP but silently 3 over gRPC.
    unused = httpx.MockTransport(lambda request: pytest.fail("no request for a bad top_k"))
    message = f"top_k must be an integer from 1 to 5, not {top_k!r}"
    with client.HttpClient("http://gw", transport=unused) as http, pytest.raises(ValueError, match=re.escape(message)):
        http.predict(b"x", top_k=top_k)
    with client.GrpcClient("127.0.0.1:1") as grpc_client, pytest.raises(ValueError, match=re.escape(message)):
        grpc_client.predict(b"x", top_k=top_k)


@pytest.mark.parametrize("argv", [["--top-k", "9"], ["--top-k", "0"], ["--top-k", "true"]])
def test_predict_cli_refuses_top_k_outside_the_rule_for_http_and_grpc(argv, capsys):
    from tlserve.cli import main

    for transport in ([], ["--grpc", "127.0.0.1:1"]):
        with pytest.raises(SystemExit) as caught:
            main(["predict", "x.png", *transport, *argv])
        assert caught.value.code == 2
        assert "top_k must be an integer from 1 to 5" in capsys.readouterr().err


def test_predict_cli_api_key_from_flag_or_env(monkeypatch):
    from tlserve.cli import build_parser

    monkeypatch.setenv("TLSERVE_API_KEY", "from-env")
    assert build_parser().parse_args(["predict", "x.png"]).api_key == "from-env"
    assert build_parser().parse_args(["predict", "x.png", "--api-key", "flag"]).api_key == "flag"


def test_predict_cli_api_key_reaches_a_gateway_that_requires_one_over_http_and_grpc(tmp_path, capsys):
    # docs/deploy.md: TLSERVE_API_KEYS on the gateway, then `tlserve predict` — which ended in HTTP 401.
    import asyncio
    import threading

    from service.gateway.server import serve
    from tests.conftest import random_images
    from tests.service.gateway.conftest import make_settings
    from tests.service.gateway.fakes import FakeModelServer
    from tlserve.cli import main

    image = tmp_path / "a.png"
    image.write_bytes(random_images(1)[0])
    ready, stop_holder = threading.Event(), {}

    def run() -> None:
        async def main_loop() -> None:
            stop_holder["stop"], stop_holder["loop"] = asyncio.Event(), asyncio.get_running_loop()
            settings = make_settings(http_host="127.0.0.1", api_keys="s3cret")

            def on_ready(ports) -> None:
                stop_holder["ports"] = ports
                ready.set()

            await serve(settings, stop=stop_holder["stop"], on_ready=on_ready, backend=FakeModelServer())

        asyncio.run(main_loop())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    ports = stop_holder["ports"]
    try:
        http = ["--url", f"http://127.0.0.1:{ports.http_port}"]
        grpc = ["--grpc", f"127.0.0.1:{ports.grpc_port}"]
        for where, refusal in ((http, "HTTP 401"), (grpc, "UNAUTHENTICATED")):
            assert main(["predict", str(image), *where]) == 2
            assert refusal in capsys.readouterr().err
            assert main(["predict", str(image), *where, "--api-key", "s3cret"]) == 0, capsys.readouterr().err
            assert "(demo v2)" in capsys.readouterr().out
    finally:
        stop_holder["loop"].call_soon_threadsafe(stop_holder["stop"].set)
        thread.join(30)
