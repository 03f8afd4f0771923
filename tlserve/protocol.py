"""TF Serving's protocol for the processes that never run a model: messages and gRPC stubs without TensorFlow.

Re-exports the modules of the generated `tlserve.protos` package (scripts/gen_protos.py), whose descriptors are
byte-identical to `tensorflow_serving.apis`; in a process that also loads the official modules both names resolve
to the same message classes.
"""

from __future__ import annotations

from tlserve.protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tlserve.protos.tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tlserve.protos.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
)
from tlserve.protos.tensorflow_serving.config import model_server_config_pb2

__all__ = [
    "get_model_metadata_pb2",
    "get_model_status_pb2",
    "meta_graph_pb2",
    "model_management_pb2",
    "model_pb2",
    "model_server_config_pb2",
    "model_service_pb2",
    "model_service_pb2_grpc",
    "predict_pb2",
    "prediction_log_pb2",
    "prediction_service_pb2",
    "prediction_service_pb2_grpc",
    "saved_model_pb2",
    "tensor_pb2",
    "tensor_shape_pb2",
    "types_pb2",
]
