"""The protocol-neutral gateway: auth, validation, target resolution (labels, canary), batching and upstream calls.

The HTTP (`http.app`) and gRPC (`grpc.app`) adapters both call one `GatewayCore`, so limits, errors and metrics match.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import grpc.aio

from service.gateway.core import served_models
from service.gateway.core.batching import MicroBatcher
from service.gateway.core.decode_errors import describe_decode_failure, strip_tf_internals
from service.gateway.core.image_formats import has_tiff, prepare_images, with_file_name
from service.gateway.core.metrics import GatewayMetrics
from service.gateway.core.predict_checks import check_predict_request
from service.gateway.core.request_limits import check_model_spec, check_predict_names, check_request_pixels
from service.gateway.core.routing import LabelRouter
from service.gateway.core.targets import Classification, ImagePrediction, LabelScore, ModelTarget
from service.gateway.core.tensors import string_tensor, to_array
from service.gateway.core.validation import check_images
from service.gateway.errors import (
    BadRequest,
    GatewayError,
    InvalidImage,
    NotFound,
    Unauthenticated,
    translate_errors,
)
from service.gateway.settings import Settings
from service.gateway.upstream.backend import Backend, PredictRequest, PredictResponse
from tlserve.contract import INPUT_BYTES, OUTPUT_CLASSES, OUTPUT_SCORES, SIGNATURE_BYTES
from tlserve.protocol import get_model_metadata_pb2, get_model_status_pb2, predict_pb2

logger = logging.getLogger(__name__)
Result = TypeVar("Result")
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


@dataclass(frozen=True)
class _Row:
    """One image's answer from an upstream call."""

    model: str
    version: int
    top: list[LabelScore]


class GatewayCore:
    """Everything between a decoded request and the upstream model server."""

    def __init__(self, settings: Settings, backend: Backend, metrics: GatewayMetrics, rng: random.Random) -> None:
        self.settings = settings
        self.backend = backend
        self.metrics = metrics
        # (model, label) → version last seen answering, for tlserve_model_info.
        self._label_versions: dict[tuple[str, str], str] = {}
        self._router = LabelRouter(settings, rng)
        self._batcher: MicroBatcher[_Row] = MicroBatcher(
            self._predict_rows,
            max_batch_size=settings.max_batch_size,
            batch_wait_timeout_s=settings.batch_wait_timeout_s,
            max_concurrent_batches=settings.max_concurrent_batches,
            metrics=metrics,
        )

    async def close(self) -> None:
        await self._batcher.close()

    def authenticate(self, api_key: str | None) -> None:
        """401 unless auth is off or the key is one of TLSERVE_API_KEYS (constant-time compare)."""
        if not self.settings.api_keys:
            return
        if api_key and any(hmac.compare_digest(api_key, key) for key in self.settings.api_keys):
            return
        raise Unauthenticated("a valid API key is required (header X-API-Key or Authorization: Bearer)")

    def routes(self, target: ModelTarget) -> list[ModelTarget]:
        """Where to send a request, in order of preference (see `LabelRouter.routes`)."""
        return self._router.routes(target)

    async def _first_answer(
        self, targets: list[ModelTarget], call: Callable[[ModelTarget], Awaitable[Result]]
    ) -> Result:
        return await self._router.first_answer(targets, call)

    async def classify(
        self,
        images: list[bytes],
        target: ModelTarget,
        top_k: int,
        timeout_s: float,
        names: list[str] | None = None,
    ) -> Classification:
        """Top-k labels per image: validate, route, batch with concurrent requests, call upstream.

        `names` (e.g. multipart file names) only make error messages clearer.
        """
        settings = self.settings
        if len(images) <= settings.max_images_per_request:  # check_images refuses more, unconverted
            images = await self._prepare_images(images, names or [])
        try:
            headers = check_images(
                images, max_images=settings.max_images_per_request, max_pixels=settings.max_image_pixels
            )
            check_request_pixels((header.decoded_pixels for header in headers), settings.max_request_pixels)
        except GatewayError as error:
            raise with_file_name(error, names or []) from error.__cause__

        async def send(routed: ModelTarget) -> list[_Row]:
            try:
                return await self._submit(routed, images, timeout_s)
            except BadRequest as error:
                if not _upstream_invalid_argument(error):
                    raise
                raise await self._undecodable_image(routed, images, names or [], error, timeout_s) from error

        rows = await self._first_answer(self.routes(target), send)
        predictions = [_top_k(row.top, top_k) for row in rows]
        return Classification(model=rows[0].model, version=rows[0].version, predictions=predictions)

    async def _prepare_images(self, images: list[bytes], names: list[str]) -> list[bytes]:
        """TIFF → PNG in a thread (seconds of Pillow work that must not hold the event loop); others as they are."""
        settings = self.settings
        limits = {"max_pixels": settings.max_image_pixels, "max_request_pixels": settings.max_request_pixels}
        if not has_tiff(images):
            return prepare_images(images, names, **limits)
        return await asyncio.to_thread(prepare_images, images, names, **limits)

    async def _undecodable_image(
        self, target: ModelTarget, images: list[bytes], names: list[str], error: BadRequest, timeout_s: float
    ) -> GatewayError:
        """The request's own serving_default call failed with INVALID_ARGUMENT (the batcher has already split it
        off from other requests): the model could not decode one of its images. Name it, trying images one by one
        when the request has several (this costs upstream calls only on this failure path)."""
        index = 0 if len(images) == 1 else None
        deadline = time.monotonic() + timeout_s
        for candidate, image in enumerate(images if index is None else []):
            try:
                await self._predict_rows(target, [image], max(deadline - time.monotonic(), 0.001))
            except BadRequest as single_error:
                if _upstream_invalid_argument(single_error):
                    index, error = candidate, single_error
                    break
                raise
        if index is None:
            # Every image decodes alone: not a decoding problem; the model server's words, without TF internals.
            return BadRequest(strip_tf_internals(error.message))
        name = f" ({names[index]})" if index < len(names) and names[index] else ""
        reason = describe_decode_failure(error.message, _image_format(images[index]))
        return InvalidImage(f"image {index}{name} could not be decoded: {reason}")

    async def predict(self, request: PredictRequest, timeout_s: float) -> PredictResponse:
        """A TF Serving PredictRequest proxied as is, after the same image checks and limits as /predict."""
        spec = request.model_spec
        if not spec.name:
            spec.name = self.default_model()  # the same default model rule as HTTP /predict
        check_predict_names(request)
        await self._prepare_encoded_images(request)
        check_predict_request(
            request,
            max_images=self.settings.max_images_per_request,
            max_pixels=self.settings.max_image_pixels,
            max_request_pixels=self.settings.max_request_pixels,
        )
        choice = spec.WhichOneof("version_choice")
        target = ModelTarget(
            spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
        )

        async def send(routed: ModelTarget) -> PredictResponse:
            if not routed.routed:
                return await self._predict_and_count(request, routed, timeout_s)
            routed_request = predict_pb2.PredictRequest()
            routed_request.CopyFrom(request)
            routed.apply_to(routed_request.model_spec)
            return await self._predict_and_count(routed_request, routed, timeout_s)

        return await self._first_answer(self.routes(target), send)

    async def _prepare_encoded_images(self, request: PredictRequest) -> None:
        """Encoded images as /predict treats them, so every route serves what training accepts: TIFF → PNG (in
        place, in a thread, its pixels held to the budget first), a truncated PNG/JPEG is a 400 naming it."""
        if INPUT_BYTES not in request.inputs:
            return
        tensor = request.inputs[INPUT_BYTES]
        images = list(tensor.string_val)
        if len(images) > self.settings.max_images_per_request:
            return  # check_predict_request refuses it, unconverted
        prepared = await self._prepare_images(images, [])
        if prepared != images:
            del tensor.string_val[:]
            tensor.string_val.extend(prepared)

    async def model_status(self, request: Any, timeout_s: float) -> Any:
        check_model_spec(request.model_spec)
        return await self._upstream(self.backend.get_model_status(request, timeout_s))

    async def model_metadata(self, request: Any, timeout_s: float) -> Any:
        check_model_spec(request.model_spec)
        return await self._upstream(self.backend.get_model_metadata(request, timeout_s))

    def default_model(self) -> str:
        """The model of a request that names none (see `served_models`)."""
        return served_models.default_model(self.settings)

    async def readiness(self) -> dict[str, str]:
        """Each model the upstream is configured to serve → "AVAILABLE" or why not; empty when none is known."""
        names = served_models.served_models(self.settings) or ()
        timeout_s = min(self.settings.request_timeout_s, 2.0)

        async def state(name: str) -> str:
            request = get_model_status_pb2.GetModelStatusRequest()
            request.model_spec.name = name
            try:
                response = await self.model_status(request, timeout_s)
            except GatewayError as exc:
                return exc.public_message
            except Exception as exc:
                logger.info("readiness of %s: %s", name, exc)
                return "no answer from the model server"
            if any(status.state == AVAILABLE for status in response.model_version_status):
                return "AVAILABLE"
            return "no AVAILABLE version"

        states = await asyncio.gather(*(state(name) for name in names))
        return dict(zip(names, states, strict=True))

    def metadata_request(self, target: ModelTarget, signature_name: str = "") -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        target.apply_to(request.model_spec)
        request.model_spec.signature_name = signature_name
        return request

    def status_request(self, target: ModelTarget) -> Any:
        request = get_model_status_pb2.GetModelStatusRequest()
        target.apply_to(request.model_spec)
        return request

    async def _submit(self, target: ModelTarget, images: list[bytes], timeout_s: float) -> list[_Row]:
        if self.settings.batching_enabled:
            return await self._batcher.submit(target, images, timeout_s)
        return await self._predict_rows(target, images, timeout_s)

    async def _predict_rows(self, key: Hashable, images: list[bytes], timeout_s: float) -> list[_Row]:
        """One upstream Predict of serving_default for `images`; one row per image."""
        assert isinstance(key, ModelTarget)
        request = predict_pb2.PredictRequest(output_filter=[OUTPUT_CLASSES, OUTPUT_SCORES])
        key.apply_to(request.model_spec)
        request.model_spec.signature_name = SIGNATURE_BYTES
        request.inputs[INPUT_BYTES].CopyFrom(string_tensor(images))
        response = await self._predict_and_count(request, key, timeout_s)
        try:
            classes = to_array(response.outputs[OUTPUT_CLASSES])
            scores = to_array(response.outputs[OUTPUT_SCORES])
        except (KeyError, ValueError) as exc:
            raise BadRequest(f"model {key.name!r} does not have the classes/scores outputs of tlserve models") from exc
        model, version = response.model_spec.name or key.name, response.model_spec.version.value
        return [
            _Row(
                model, version, [LabelScore(c.decode(), float(s)) for c, s in zip(row_classes, row_scores, strict=True)]
            )
            for row_classes, row_scores in zip(classes, scores, strict=True)
        ]

    async def _predict_and_count(self, request: Any, target: ModelTarget, timeout_s: float) -> Any:
        predicts = self.metrics.upstream_predicts
        try:
            response = await self._upstream(self.backend.predict(request, timeout_s))
        except GatewayError as exc:
            if target.routed and isinstance(exc, NotFound):
                raise  # a label the model lacks is a probe, not an error: the request falls back (see routes)
            # Per-label outcomes let alerts compare the canary's error ratio with the rest of the traffic.
            predicts.labels(label=self._metric_label(target), code=exc.grpc_status.name).inc()
            raise
        predicts.labels(label=target.label or "", code="OK").inc()
        model, version = response.model_spec.name or target.name, str(response.model_spec.version.value)
        images = max(
            (tensor.tensor_shape.dim[0].size for tensor in request.inputs.values() if tensor.tensor_shape.dim),
            default=1,
        )
        self.metrics.images.labels(model=model, version=version).inc(images)
        self._record_label(model, target.label or "", version)
        return response

    def _metric_label(self, target: ModelTarget) -> str:
        """A failed request's label as a metric label: clients may send any label, metrics must stay low-cardinality."""
        label = target.label or ""
        known = {"", "stable", self.settings.canary_label, self.settings.default_label}
        known |= {seen for _, seen in self._label_versions}
        return label if label in known else "other"

    def _record_label(self, model: str, label: str, version: str) -> None:
        """tlserve_model_info shows the version each label answered with last; a moved label drops its old series."""
        previous = self._label_versions.get((model, label))
        if previous == version:
            return
        if previous is not None:
            self.metrics.model_info.remove(model, previous, label)
        self._label_versions[(model, label)] = version
        self.metrics.model_info.labels(model=model, version=version, label=label).set(1)

    async def _upstream(self, call: Awaitable[Result]) -> Result:
        """Await one backend call, timing it and translating its errors into the error tree."""
        started = time.perf_counter()
        try:
            with translate_errors():
                return await call
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, grpc.aio.AioRpcError) else None
            if cause is not None:
                self.metrics.upstream_errors.labels(code=cause.code().name).inc()
            raise
        finally:
            self.metrics.upstream_duration.observe(time.perf_counter() - started)


def _upstream_invalid_argument(error: GatewayError) -> bool:
    """The error is the model server's INVALID_ARGUMENT (what a model that cannot decode an image answers)."""
    cause = error.__cause__
    return isinstance(cause, grpc.aio.AioRpcError) and cause.code() == grpc.StatusCode.INVALID_ARGUMENT


def _image_format(image: bytes) -> str | None:
    """The format an image's header claims (for error messages only)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as opened:
            image_format: str | None = opened.format
            return image_format
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _top_k(top: list[LabelScore], top_k: int) -> ImagePrediction:
    best = top[:top_k]
    return ImagePrediction(label=best[0].label, score=best[0].score, top_k=best)
