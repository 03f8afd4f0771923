"""One sample of every TF Serving message tlserve sends or reads, built from either module tree.

`build(prefix)` with prefix "" uses the official `tensorflow_serving`/`tensorflow` modules, with "tlserve.protos."
the generated TF-free ones; `python -m tests.tlserve.protocol_samples PREFIX [--reparse]` prints them (or
re-parses JSON from stdin), so the wire test
can run the generated side in a process where TensorFlow cannot be imported.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

IMAGES = [b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * n for n in (1, 3, 7)]  # several images, every byte value


def _module(prefix: str, name: str) -> Any:
    return importlib.import_module(prefix + name)


def build(prefix: str) -> dict[str, Any]:
    tensor = _module(prefix, "tensorflow.core.framework.tensor_pb2")
    types = _module(prefix, "tensorflow.core.framework.types_pb2")
    shape = _module(prefix, "tensorflow.core.framework.tensor_shape_pb2")
    predict = _module(prefix, "tensorflow_serving.apis.predict_pb2")
    metadata = _module(prefix, "tensorflow_serving.apis.get_model_metadata_pb2")
    status = _module(prefix, "tensorflow_serving.apis.get_model_status_pb2")
    management = _module(prefix, "tensorflow_serving.apis.model_management_pb2")
    config = _module(prefix, "tensorflow_serving.config.model_server_config_pb2")
    log = _module(prefix, "tensorflow_serving.apis.prediction_log_pb2")
    meta_graph = _module(prefix, "tensorflow.core.protobuf.meta_graph_pb2")
    saved_model = _module(prefix, "tensorflow.core.protobuf.saved_model_pb2")

    def dims(*sizes: int) -> Any:
        return shape.TensorShapeProto(dim=[shape.TensorShapeProto.Dim(size=size) for size in sizes])

    images = tensor.TensorProto(dtype=types.DT_STRING, tensor_shape=dims(len(IMAGES)), string_val=IMAGES)
    request = predict.PredictRequest(output_filter=["scores"])
    request.model_spec.name = "pets"
    request.model_spec.signature_name = "serving_default"
    request.model_spec.version_label = "canary"
    request.inputs["image_bytes"].CopyFrom(images)
    probabilities = tensor.TensorProto(
        dtype=types.DT_FLOAT, tensor_shape=dims(3, 2), float_val=[0.25, 0.75, 1.0, 0.0, 1e-7, 0.9999999]
    )
    response = predict.PredictResponse()
    response.model_spec.name = "pets"
    response.model_spec.version.value = 3
    response.outputs["probabilities"].CopyFrom(probabilities)
    response.outputs["classes"].CopyFrom(
        tensor.TensorProto(dtype=types.DT_STRING, tensor_shape=dims(3, 1), string_val=[b"cat", b"dog", b"\xc3\xa9"])
    )
    pixels = tensor.TensorProto(dtype=types.DT_UINT8, tensor_shape=dims(1, 2, 2, 3), tensor_content=bytes(range(12)))

    signature = meta_graph.SignatureDef(method_name="tensorflow/serving/predict")
    signature.inputs["image_bytes"].CopyFrom(
        meta_graph.TensorInfo(name="serving_default_image_bytes:0", dtype=types.DT_STRING, tensor_shape=dims(-1))
    )
    signature_map = metadata.SignatureDefMap()
    signature_map.signature_def["serving_default"].CopyFrom(signature)
    metadata_response = metadata.GetModelMetadataResponse()
    metadata_response.model_spec.name = "pets"
    metadata_response.metadata["signature_def"].Pack(signature_map)
    metadata_request = metadata.GetModelMetadataRequest(metadata_field=["signature_def"])
    metadata_request.model_spec.name = "pets"

    status_request = status.GetModelStatusRequest()
    status_request.model_spec.name = "pets"
    status_response = status.GetModelStatusResponse()
    version_status = status_response.model_version_status.add(version=3, state=status.ModelVersionStatus.AVAILABLE)
    version_status.status.error_message = "ok"

    server_config = config.ModelServerConfig()
    model = server_config.model_config_list.config.add(name="pets", base_path="/models/pets")
    model.model_platform = "tensorflow"
    model.model_version_policy.specific.versions.extend([2, 3])
    model.version_labels["stable"] = 2
    model.version_labels["canary"] = 3
    reload_request = management.ReloadConfigRequest(config=server_config)
    reload_response = management.ReloadConfigResponse()
    reload_response.status.error_message = "reloaded"

    warmup = log.PredictionLog()
    warmup.predict_log.request.CopyFrom(request)
    saved = saved_model.SavedModel(saved_model_schema_version=1)
    saved.meta_graphs.add().signature_def["serving_default"].CopyFrom(signature)
    return {
        "TensorProto(string)": images,
        "TensorProto(float)": probabilities,
        "TensorProto(uint8)": pixels,
        "PredictRequest": request,
        "PredictResponse": response,
        "GetModelMetadataRequest": metadata_request,
        "GetModelMetadataResponse": metadata_response,
        "GetModelStatusRequest": status_request,
        "GetModelStatusResponse": status_response,
        "ReloadConfigRequest": reload_request,
        "ReloadConfigResponse": reload_response,
        "ModelServerConfig": server_config,
        "PredictionLog": warmup,
        "SavedModel": saved,
    }


def serialize(messages: dict[str, Any]) -> dict[str, str]:
    return {name: message.SerializeToString(deterministic=True).hex() for name, message in messages.items()}


def reparse(prefix: str, wire: dict[str, str]) -> dict[str, str]:
    """Parse each message with `prefix`'s classes and serialize it again."""
    classes = {name: type(message) for name, message in build(prefix).items()}
    return serialize({name: classes[name].FromString(bytes.fromhex(data)) for name, data in wire.items()})


if __name__ == "__main__":
    module_prefix = sys.argv[1]
    if sys.argv[2:] == ["--reparse"]:
        print(json.dumps(reparse(module_prefix, json.load(sys.stdin))))
    else:
        print(json.dumps(serialize(build(module_prefix))))
