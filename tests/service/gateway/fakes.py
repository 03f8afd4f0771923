"""A fake upstream model server for gateway tests: answers like a tlserve model, records every call."""

from __future__ import annotations

import asyncio
import hashlib
import io

import grpc
import grpc.aio
import numpy as np
from PIL import Image
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

from service.gateway.core.tensors import from_array, to_array
from tests.conftest import random_images

AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


def rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def image_label(image: bytes) -> str:
    """The fake model's 'class' of an image: a digest, so each caller can recognise its own answer."""
    return hashlib.sha256(image).hexdigest()[:12]


class FakeModelServer:
    """In-memory stand-in for the model server; the same logic backs the fake gRPC servicer."""

    def __init__(self, models: dict[str, dict[int, str | None]] | None = None, delay_s: float = 0.0) -> None:
        # model → version → label (or None)
        self.models = models if models is not None else {"demo": {1: None, 2: "stable"}}
        self.delay_s = delay_s
        self.predict_requests: list[predict_pb2.PredictRequest] = []
        self.fail_with: grpc.aio.AioRpcError | None = None
        self.fail_next: list[grpc.aio.AioRpcError] = []  # raised one per call, before fail_with

    def resolve(self, spec) -> int:
        """The version a ModelSpec names, failing with the real servers' codes and messages."""
        versions = self.models.get(spec.name)
        choice = spec.WhichOneof("version_choice")
        if choice == "version_label":
            # Like TF Serving and the embedded server: an unknown label (of any model) is INVALID_ARGUMENT.
            for version, label in (versions or {}).items():
                if label == spec.version_label:
                    return version
            raise rpc_error(
                grpc.StatusCode.INVALID_ARGUMENT, f"Unrecognized servable version label: {spec.version_label}"
            )
        if not versions:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})")
        if choice == "version":
            if spec.version.value not in versions:
                raise rpc_error(
                    grpc.StatusCode.NOT_FOUND,
                    f"Servable not found for request: Specific({spec.name}, {spec.version.value})",
                )
            return spec.version.value
        return max(versions)

    async def predict(self, request, timeout_s: float):
        self.predict_requests.append(request)
        if self.fail_next:
            raise self.fail_next.pop(0)
        if self.fail_with is not None:
            raise self.fail_with
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        version = self.resolve(request.model_spec)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
        if "image_bytes" not in request.inputs:
            pixels = to_array(request.inputs["pixels"])
            response.outputs["probabilities"].CopyFrom(
                from_array(np.full((len(pixels), 3), 1 / 3, np.float32), types_pb2.DT_FLOAT)
            )
            return response
        images = list(request.inputs["image_bytes"].string_val)
        for image in images:
            try:
                with Image.open(io.BytesIO(image)) as decoded:
                    decoded.load()
            except Exception as exc:
                raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid image data: {exc}") from None
        classes = np.array([[image_label(image), f"v{version}", "other"] for image in images], dtype=object)
        classes = np.vectorize(lambda text: text.encode(), otypes=[object])(classes)
        scores = np.tile(np.array([0.7, 0.2, 0.1], np.float32), (len(images), 1))
        response.outputs["classes"].CopyFrom(from_array(classes, types_pb2.DT_STRING))
        response.outputs["scores"].CopyFrom(from_array(scores, types_pb2.DT_FLOAT))
        if not request.output_filter or "probabilities" in request.output_filter:
            response.outputs["probabilities"].CopyFrom(from_array(scores, types_pb2.DT_FLOAT))
        return response

    async def get_model_status(self, request, timeout_s: float):
        version = self.resolve(request.model_spec) if request.model_spec.WhichOneof("version_choice") else None
        versions = [version] if version is not None else sorted(self.resolve_all(request.model_spec.name))
        response = get_model_status_pb2.GetModelStatusResponse()
        for number in versions:
            status = response.model_version_status.add(version=number, state=AVAILABLE)
            status.status.error_message = ""
        return response

    def resolve_all(self, name: str) -> list[int]:
        if name not in self.models:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {name}")
        return list(self.models[name])

    async def get_model_metadata(self, request, timeout_s: float):
        version = self.resolve(request.model_spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        serving = signatures.signature_def["serving_default"]
        serving.method_name = "tensorflow/serving/predict"
        serving.inputs["image_bytes"].name = "serving_default_image_bytes:0"
        serving.inputs["image_bytes"].dtype = types_pb2.DT_STRING
        serving.inputs["image_bytes"].tensor_shape.dim.add(size=-1)
        for name, dtype in (
            ("probabilities", types_pb2.DT_FLOAT),
            ("classes", types_pb2.DT_STRING),
            ("scores", types_pb2.DT_FLOAT),
        ):
            serving.outputs[name].name = f"StatefulPartitionedCall:{name}"
            serving.outputs[name].dtype = dtype
        pixels = signatures.signature_def["predict_pixels"]
        pixels.inputs["pixels"].dtype = types_pb2.DT_UINT8
        pixels.outputs["probabilities"].dtype = types_pb2.DT_FLOAT
        response.metadata["signature_def"].Pack(signatures)
        return response

    async def close(self) -> None:
        return None


class GatedModelServer(FakeModelServer):
    """Holds every Predict until the test sets `release`; `arrived` tells the test a request has reached it."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def predict(self, request, timeout_s: float):
        self.arrived.set()
        await self.release.wait()
        return await super().predict(request, timeout_s)


class _Delegate:
    def __init__(self, fake: FakeModelServer) -> None:
        self.fake = fake
        self.deadlines: list[float | None] = []

    async def _answer(self, call, request, context):
        self.deadlines.append(context.time_remaining())
        try:
            return await call(request, context.time_remaining() or 30.0)
        except grpc.aio.AioRpcError as error:
            await context.abort(error.code(), error.details())


def _servicers(fake: FakeModelServer):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    class Predictions(_Delegate, prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):  # noqa: N802
            return await self._answer(self.fake.predict, request, context)

        async def GetModelMetadata(self, request, context):  # noqa: N802
            return await self._answer(self.fake.get_model_metadata, request, context)

    class Models(_Delegate, model_service_pb2_grpc.ModelServiceServicer):
        async def GetModelStatus(self, request, context):  # noqa: N802
            return await self._answer(self.fake.get_model_status, request, context)

    return Predictions(fake), Models(fake)


async def start_fake_upstream(fake: FakeModelServer, port: int = 0, max_message_bytes: int | None = None):
    """The fake behind a real grpc.aio server on 127.0.0.1; returns (server, port, predictions servicer)."""
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    options = [("grpc.max_receive_message_length", max_message_bytes)] if max_message_bytes else []
    server = grpc.aio.server(options=options)
    predictions, models = _servicers(fake)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(predictions, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(models, server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server, bound, predictions


def corrupt_png(image: bytes | None = None) -> bytes:
    """A PNG whose header and end marker are fine (it passes the cheap checks) but whose pixel data is broken."""
    image = image or random_images(1, seed=5)[0]
    broken = image.index(b"IDAT") + 24
    return image[:broken] + bytes(64) + image[broken + 64 :]
