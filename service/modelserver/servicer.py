"""TF Serving's gRPC services over the serving core: PredictionService (Predict, GetModelMetadata) and
ModelService (GetModelStatus, HandleReloadConfigRequest). Every other method answers UNIMPLEMENTED.

Handlers run on the gRPC server's worker threads (TensorFlow releases the GIL while it computes).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from service.modelserver.core import ServingCore
from service.modelserver.errors import (
    Cancelled,
    InvalidArgument,
    ServingError,
    bounded_message,
    status_proto_fields,
)
from service.modelserver.manager import VersionStatus

logger = logging.getLogger(__name__)

Handler = TypeVar("Handler", bound=Callable[..., Any])
SIGNATURE_DEF_FIELD = "signature_def"


def model_spec_choice(spec: Any) -> tuple[int | None, str | None]:
    """(version, label) of a ModelSpec's version_choice oneof."""
    choice = spec.WhichOneof("version_choice")
    if choice == "version":
        return int(spec.version.value), None
    if choice == "version_label":
        return None, str(spec.version_label)
    return None, None


def abort_on_error(api: str) -> Callable[[Handler], Handler]:
    """Turn ServingErrors into the gRPC status TF Serving would send, and count/time every call."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            model_name = _model_name(request)
            status = "OK"
            try:
                return handler(self, request, context)
            except ServingError as exc:
                status = exc.grpc_status.name
                context.abort(exc.grpc_status, bounded_message(exc.message))
            except Exception:
                status = "INTERNAL"
                logger.exception("%s failed", api)
                context.abort(grpc.StatusCode.INTERNAL, f"{api} failed; see the model server log")
            finally:
                if api in ("predict", "GetModelMetadata"):
                    metrics = self.core.metrics
                    metrics.request_count.inc(model_name, status)
                    elapsed_us = (time.perf_counter() - started) * 1e6
                    metrics.request_latency.observe(elapsed_us, model_name, api, "GRPC")

        return wrapper  # type: ignore[return-value]

    return decorate


def _model_name(request: Any) -> str:
    try:
        return str(request.model_spec.name)
    except AttributeError:  # ReloadConfigRequest names no model
        return ""


def tensor_inputs(request: Any) -> dict[str, Any]:
    import tensorflow as tf

    arrays = {}
    for alias, proto in request.inputs.items():
        try:
            arrays[alias] = tf.make_ndarray(proto)
        except Exception as exc:
            raise InvalidArgument(f"tensor parsing error: {alias}") from exc
    return arrays


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):  # type: ignore[misc]
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    @abort_on_error("predict")
    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (gRPC's name)
        import tensorflow as tf

        spec = request.model_spec
        version, label = model_spec_choice(spec)
        servable = self.core.manager.resolve(spec.name, version, label)
        inputs = tensor_inputs(request)
        if not context.is_active():
            raise Cancelled("the caller went away before inference")
        prediction = self.core.predict(
            servable, spec.signature_name, inputs, list(request.output_filter), is_active=context.is_active
        )
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = prediction.signature_name
        for alias, value in prediction.outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    @abort_on_error("GetModelMetadata")
    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (gRPC's name)
        return model_metadata(self.core, request)


def model_metadata(core: ServingCore, request: Any) -> Any:
    """GetModelMetadataResponse with `metadata["signature_def"]` packing a SignatureDefMap (TF Serving's shape)."""
    if not request.metadata_field:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in request.metadata_field:
        if field != SIGNATURE_DEF_FIELD:
            raise InvalidArgument(f"Metadata field {field} is not supported")
    version, label = model_spec_choice(request.model_spec)
    servable = core.manager.resolve(request.model_spec.name, version, label)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_def_map())
    return response


def model_status(core: ServingCore, request: Any) -> Any:
    """GetModelStatusResponse for a model, a version or a label (newest version first)."""
    if not request.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    version, label = model_spec_choice(request.model_spec)
    response = get_model_status_pb2.GetModelStatusResponse()
    for number, status in core.manager.status(request.model_spec.name, version, label):
        _add_version_status(response, number, status)
    return response


def _add_version_status(response: Any, version: int, status: VersionStatus) -> None:
    entry = response.model_version_status.add()
    entry.version = version
    entry.state = int(status.state)
    entry.status.error_code, entry.status.error_message = status_proto_fields(status.error)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):  # type: ignore[misc]
    def __init__(self, core: ServingCore) -> None:
        self.core = core

    @abort_on_error("GetModelStatus")
    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (gRPC's name)
        return model_status(self.core, request)

    @abort_on_error("HandleReloadConfigRequest")
    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802 (gRPC's name)
        if request.config.WhichOneof("config") != "model_config_list":
            raise InvalidArgument(
                "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                "Only ModelConfigList is currently supported"
            )
        config = type(request.config)()
        config.CopyFrom(request.config)
        self.core.reload(config)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response


def add_servicers(server: grpc.Server, core: ServingCore) -> None:
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(core), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(core), server)
