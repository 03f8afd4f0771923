"""PredictionService and ModelService against a real in-process server, called as a TF Serving client would."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from tests.conftest import CLASSES, IMAGE_SIZE, random_images
from tests.support.modelserver import predict_request, running_model_server

CONFIG = """
model_config_list {
  config {
    name: "demo"
    base_path: "demo"
    model_platform: "tensorflow"
    model_version_policy { all {} }
    version_labels { key: "stable" value: 1 }
  }
}
"""


@pytest.fixture(scope="module")
def server(module_repo):
    with running_model_server(module_repo(versions=(1, 2), config=CONFIG)) as running:
        yield running


@pytest.fixture(scope="module")
def stub(server):
    return server.prediction_stub()


@pytest.fixture(scope="module")
def model_stub(server):
    return server.model_stub()


@pytest.fixture(scope="module")
def in_process(exported_version):
    return tf.saved_model.load(str(exported_version)).signatures["serving_default"]


def rpc_error(call, request) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=30)
    return caught.value


def test_predict_equals_in_process_model(stub, in_process):
    images = random_images(3, seed=1)
    response = stub.Predict(predict_request(images), timeout=30)
    served = tf.make_ndarray(response.outputs["probabilities"])
    expected = in_process(image_bytes=tf.constant(images))["probabilities"].numpy()
    assert served.shape == (3, len(CLASSES))
    assert np.max(np.abs(served - expected)) <= 1e-6
    classes = tf.make_ndarray(response.outputs["classes"])
    assert {c.decode() for c in classes[0]} == set(CLASSES)


def test_response_names_the_latest_available_version_and_signature(stub):
    response = stub.Predict(predict_request(random_images(1)), timeout=30)
    assert response.model_spec.name == "demo"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"


def test_specific_version_and_label_are_served_by_that_version(stub):
    by_version = stub.Predict(predict_request(random_images(1), version=1), timeout=30)
    by_label = stub.Predict(predict_request(random_images(1), version_label="stable"), timeout=30)
    assert by_version.model_spec.version.value == 1
    assert by_label.model_spec.version.value == 1


def test_unknown_version_is_not_found_with_tf_serving_message(stub):
    error = rpc_error(stub.Predict, predict_request(random_images(1), version=3))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(demo, 3)"


def test_unknown_model_is_not_found_with_latest_in_message(stub):
    error = rpc_error(stub.Predict, predict_request(random_images(1), model="nope"))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(nope)"


def test_unknown_label_is_rejected_like_tf_serving(stub):
    error = rpc_error(stub.Predict, predict_request(random_images(1), version_label="canary"))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: canary"


def test_undecodable_image_is_invalid_argument_naming_the_image(stub):
    error = rpc_error(stub.Predict, predict_request([b"not an image at all"]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "image 0 is not a recognisable image file; one of BMP, GIF, JPEG, PNG, WEBP is required"


def test_output_filter_returns_only_the_requested_outputs(stub):
    request = predict_request(random_images(2))
    request.output_filter.append("scores")
    response = stub.Predict(request, timeout=30)
    assert list(response.outputs) == ["scores"]
    assert tf.make_ndarray(response.outputs["scores"]).shape == (2, 3)


def test_unknown_output_filter_is_invalid_argument(stub):
    request = predict_request(random_images(1))
    request.output_filter.append("logits")
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("output tensor alias not found in signature: logits")


def test_unknown_signature_is_failed_precondition(stub):
    error = rpc_error(stub.Predict, predict_request(random_images(1), signature_name="classify"))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == 'Serving signature key "classify" not found.'


def test_wrong_input_alias_lists_the_expected_inputs(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.inputs["images"].CopyFrom(tf.make_tensor_proto([b"x"]))
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input tensor alias not found in signature: images" in error.details()
    assert "{image_bytes}" in error.details()


def test_wrong_input_dtype_is_invalid_argument(stub):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([1.0, 2.0], dtype=tf.float32))
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Expects arg[0] to be string but float is provided"


def test_pixels_signature_serves_uint8_batches(stub, in_process):
    pixels = np.random.default_rng(0).integers(0, 256, (2, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.model_spec.signature_name = "predict_pixels"
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(pixels))
    response = stub.Predict(request, timeout=30)
    assert response.model_spec.signature_name == "predict_pixels"
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (2, 3)


def test_metadata_packs_a_signature_def_map_with_both_signatures(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "demo"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_map)
    assert {"serving_default", "predict_pixels"} <= set(signature_map.signature_def)
    assert set(signature_map.signature_def["serving_default"].inputs) == {"image_bytes"}
    assert response.model_spec.version.value == 2


def test_metadata_without_fields_is_invalid_argument(stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "demo"
    error = rpc_error(stub.GetModelMetadata, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_model_status_lists_every_version_newest_first(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "demo"
    response = model_stub.GetModelStatus(request, timeout=30)
    available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert [(s.version, s.state, s.status.error_code) for s in response.model_version_status] == [
        (2, available, 0),
        (1, available, 0),
    ]


def test_model_status_of_a_label_names_its_version(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "demo"
    request.model_spec.version_label = "stable"
    response = model_stub.GetModelStatus(request, timeout=30)
    assert [s.version for s in response.model_version_status] == [1]


def test_model_status_of_unknown_version_is_not_found(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "demo"
    request.model_spec.version.value = 7
    error = rpc_error(model_stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find version 7 of model demo"


def test_model_status_of_unknown_model_is_not_found(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "nope"
    error = rpc_error(model_stub.GetModelStatus, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Could not find any versions of model nope"


def test_methods_tf_serving_has_but_we_do_not_are_unimplemented(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "demo"
    error = rpc_error(stub.Classify, request)
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize("shape", [(1, 5, 5, 3), (1, IMAGE_SIZE, IMAGE_SIZE, 4), (IMAGE_SIZE, IMAGE_SIZE, 3)])
def test_pixels_of_the_wrong_shape_are_invalid_argument_naming_the_expected_shape(stub, shape):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "demo"
    request.model_spec.signature_name = "predict_pixels"
    request.inputs["pixels"].CopyFrom(tf.make_tensor_proto(np.zeros(shape, np.uint8)))
    error = rpc_error(stub.Predict, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "pixels" in error.details()
    assert f"{IMAGE_SIZE}, {IMAGE_SIZE}, 3" in error.details()
