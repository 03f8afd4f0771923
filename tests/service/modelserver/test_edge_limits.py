"""The model server's edges (issue 12): decoded-pixel budgets from headers, and one-line decode/shape errors."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from service.modelserver.decode_errors import one_line
from service.modelserver.errors import ResourceExhausted
from service.modelserver.pixel_budget import InflightPixels
from tests.conftest import IMAGE_SIZE, encode_image, random_images
from tests.support.modelserver import predict_request, running_model_server

BUDGET = 100 * 100 * 3  # three 100x100 images fit, a fourth does not


@pytest.fixture(scope="module")
def stub(module_repo):
    with running_model_server(module_repo(), max_request_pixels=BUDGET) as running:
        yield running.prediction_stub()


def rpc_error(stub, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=30)
    return caught.value


def flat_png(size: int) -> bytes:
    return encode_image(np.full((size, size, 3), 7, dtype=np.uint8))


def test_a_request_over_the_pixel_budget_is_refused_from_headers_before_decoding(stub):
    # The last image is cut short: decoding it would fail, so the budget answer proves nothing was decoded.
    images = [flat_png(100)] * 3 + [flat_png(100)[:60]]
    error = rpc_error(stub, predict_request(images))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        f"the request's images decode to 40000 pixels, more than the per-request budget of {BUDGET}; "
        "send fewer or smaller images"
    )


def test_a_request_within_the_pixel_budget_is_served(stub):
    response = stub.Predict(predict_request([flat_png(100)] * 3), timeout=30)
    assert tf.make_ndarray(response.outputs["probabilities"]).shape[0] == 3


def test_a_truncated_image_is_named_in_one_line_without_graph_text(stub):
    good = random_images(2, seed=3)
    truncated = good[1][: len(good[1]) // 2]
    error = rpc_error(stub, predict_request([good[0], truncated]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("image 1 cannot be decoded: ")
    assert "\n" not in error.details()
    assert "Graph execution" not in error.details()
    assert "node" not in error.details()


def test_a_header_that_is_not_an_image_is_named(stub):
    error = rpc_error(stub, predict_request([random_images(1)[0], b"not an image at all"]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "image 1 is not a recognisable image file; one of BMP, GIF, JPEG, PNG, WEBP is required"


def test_a_format_the_graph_cannot_decode_is_named_from_its_header(stub):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, "TIFF")
    error = rpc_error(stub, predict_request([buffer.getvalue()]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "image 0 is TIFF; one of BMP, GIF, JPEG, PNG, WEBP is required"


def test_a_zero_row_pixels_tensor_says_so_without_graph_text(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.model_spec.signature_name = "predict_pixels"
    empty = np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(empty))
    error = rpc_error(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "input pixels has 0 rows; send at least one image"


def test_decoded_pixels_in_flight_are_bounded_across_requests():
    inflight = InflightPixels(max_inflight_pixels=1000)
    with inflight.reserve(600):
        with pytest.raises(ResourceExhausted, match="bound of 1000"), inflight.reserve(600):
            pass
        with inflight.reserve(400):
            assert inflight.inflight == 1000
    assert inflight.inflight == 0


def test_a_lone_request_always_runs_even_above_the_in_flight_bound():
    inflight = InflightPixels(max_inflight_pixels=10)
    with inflight.reserve(50):
        assert inflight.inflight == 50


def test_in_flight_reservations_are_released_when_a_request_fails():
    inflight = InflightPixels(max_inflight_pixels=100)
    with pytest.raises(RuntimeError), inflight.reserve(80):
        raise RuntimeError("model failed")
    assert inflight.inflight == 0
    with inflight.reserve(80):  # the failed request's pixels no longer count
        assert inflight.inflight == 80


def test_one_line_keeps_the_reason_and_drops_tensorflow_graph_text():
    message = (
        "Graph execution error:\n\nDetected at node DecodePng defined at (most recent call last):\n"
        '  File "/x/model.py", line 3, in decode\n\n'
        "Input is empty.\n\t [[{{node DecodePng}}]] [Op:__inference_signature_wrapper_4242]"
    )
    assert one_line(message) == "Input is empty."


def test_a_20000_character_model_name_is_not_found_with_a_short_message(stub):
    error = rpc_error(stub, predict_request(random_images(1), model="m" * 20_000))
    # Echoed in full, the name broke gRPC's 16 KiB trailer limit and the client saw RESOURCE_EXHAUSTED.
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details().startswith("Servable not found for request: Latest(mmm")
    assert error.details().endswith("... (20040 characters, cut)")
    assert len(error.details()) < 1100
