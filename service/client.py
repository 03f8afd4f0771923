"""Clients for `tlserve predict`: send one encoded image to a gateway (HTTP or gRPC) and read back its top-k labels.

The gRPC client speaks plain `tensorflow.serving.PredictionService`, so it works against TF Serving as well.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
import numpy as np

from tlserve import contract

ImageBytes = bytes

# gRPC's 4 MiB default receive limit is too small for large photos (TF Serving issue #1382).
MAX_GRPC_MESSAGE_BYTES = 64 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES),
]
# HTTP answers that concern the image itself; any other error concerns the server or the request as a whole.
IMAGE_ERROR_STATUSES = frozenset({400, 413, 415, 422})
API_KEY_HEADER = "X-API-Key"  # HTTP header; lower-cased as gRPC metadata (the gateway reads both)


@dataclass(frozen=True)
class Scored:
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """One image's answer: best label first."""

    model: str
    version: int | None
    top_k: tuple[Scored, ...]


class ClientError(Exception):
    """Base of the errors `tlserve predict` prints as one line."""


class ServerError(ClientError):
    """No usable answer at all: unreachable, timed out, unavailable, unknown model."""


class RejectedImage(ClientError):
    """The server refused this image (undecodable, too large, unsupported type)."""


class HttpClient:
    """POST /predict with a multipart upload; keeps one connection for several images."""

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        timeout_s: float = 30.0,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/") if "://" in url else f"http://{url.rstrip('/')}"
        self.model = model
        headers = {API_KEY_HEADER: api_key} if api_key else {}
        try:
            self._http = httpx.Client(base_url=self.url, timeout=timeout_s, transport=transport, headers=headers)
        except httpx.InvalidURL as exc:
            raise ServerError(f"not a URL: {url!r} ({exc})") from None

    def predict(self, image: ImageBytes, *, filename: str = "image", top_k: int = 3) -> Prediction:
        contract.check_top_k(top_k)
        params: dict[str, str | int] = {"top_k": top_k}
        if self.model:
            params["model"] = self.model
        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        try:
            response = self._http.post("/predict", params=params, files=[("files", (filename, image, content_type))])
        except httpx.TransportError as exc:
            raise ServerError(f"cannot reach {self.url}: {exc or type(exc).__name__}") from exc
        if response.is_error:
            raise _http_error(response)
        try:
            return _prediction_from_json(response.json(), top_k)
        except (ValueError, KeyError, TypeError) as exc:
            raise ServerError(f"{self.url}/predict did not answer like a tlserve gateway") from exc

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _http_error(response: httpx.Response) -> ClientError:
    try:
        error = response.json()["error"]
        reason = f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        reason = response.text[:200] or response.reason_phrase
    error_class = RejectedImage if response.status_code in IMAGE_ERROR_STATUSES else ServerError
    return error_class(f"HTTP {response.status_code} {reason}")


def _prediction_from_json(body: dict[str, Any], top_k: int) -> Prediction:
    (first,) = body["predictions"]
    ranked = tuple(Scored(item["label"], float(item["score"])) for item in first["top_k"])
    version = body.get("version")
    return Prediction(str(body.get("model", "")), None if version is None else int(version), ranked[:top_k])


class GrpcClient:
    """PredictionService.Predict on `serving_default` with the raw image bytes, as any TF Serving client does."""

    def __init__(
        self, target: str, *, model: str | None = None, timeout_s: float = 30.0, api_key: str | None = None
    ) -> None:
        import grpc

        from tlserve.protocol import prediction_service_pb2_grpc

        self.target = target
        self.model = model or ""  # empty: the gateway's default model (TF Serving itself needs a name)
        self.timeout_s = timeout_s
        self._metadata = ((API_KEY_HEADER.lower(), api_key),) if api_key else None
        self._channel = grpc.insecure_channel(target, options=GRPC_OPTIONS)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def predict(self, image: ImageBytes, *, filename: str = "image", top_k: int = 3) -> Prediction:
        import grpc

        contract.check_top_k(top_k)
        request = predict_request(self.model, [image])
        try:
            response = self._stub.Predict(request, timeout=self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise _grpc_error(self.target, exc) from exc
        (prediction,) = predictions_from_response(response, top_k)
        return prediction

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc_info: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _grpc_error(target: str, exc: Any) -> ClientError:
    import grpc

    code, details = exc.code(), exc.details()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return RejectedImage(f"{code.name}: {details}")
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerError(f"cannot reach {target}: {details}")
    return ServerError(f"{code.name}: {details}")


def predict_request(model: str, images: list[ImageBytes], *, version_label: str | None = None) -> Any:
    """A `PredictRequest` for the `serving_default` signature: a DT_STRING [N] tensor of encoded images."""
    from tlserve.protocol import predict_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = contract.SIGNATURE_BYTES
    if version_label:
        request.model_spec.version_label = version_label
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(images))])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=images)
    request.inputs[contract.INPUT_BYTES].CopyFrom(tensor)
    return request


def predictions_from_response(response: Any, top_k: int) -> list[Prediction]:
    """Read the `classes`/`scores` outputs ([N, K], best first) of a PredictResponse."""
    classes = response.outputs[contract.OUTPUT_CLASSES]
    scores = response.outputs[contract.OUTPUT_SCORES]
    width = classes.tensor_shape.dim[-1].size
    labels = [label.decode() for label in classes.string_val]
    values = _float_values(scores)
    if width == 0 or len(labels) != len(values) or len(labels) % width:
        raise ServerError(f"malformed answer: {len(labels)} classes and {len(values)} scores for width {width}")
    spec = response.model_spec
    version = spec.version.value if spec.HasField("version") else None
    predictions = []
    for row in range(len(labels) // width):
        ranked = [Scored(labels[row * width + col], values[row * width + col]) for col in range(width)]
        predictions.append(Prediction(spec.name, version, tuple(ranked[:top_k])))
    return predictions


def _float_values(tensor: Any) -> list[float]:
    """A DT_FLOAT TensorProto's values: servers may fill either `float_val` or the packed `tensor_content`."""
    if tensor.tensor_content:
        return [float(value) for value in np.frombuffer(tensor.tensor_content, dtype="<f4")]
    return list(tensor.float_val)
