"""TF Serving's REST API on the gateway: `/v1/models/{name}[/versions/{v}|/labels/{l}]` status, `/metadata`, `:predict`.

Answers are TF Serving's JSON (see tfserving_json), errors its `{"error": "..."}`; upstream calls go over gRPC.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse

from service.gateway.core.gateway_core import GatewayCore
from service.gateway.core.targets import ModelTarget, make_target
from service.gateway.errors import GatewayError
from service.gateway.http.auth import AuthenticatedCore
from service.gateway.http.body_limits import read_json_body
from service.gateway.http.docs import REST_PREDICT_DESCRIPTION, REST_PREDICT_OK
from service.gateway.http.json_offload import BodyConverter, SignatureInputs
from service.gateway.http.tfserving_json import (
    metadata_json,
    predict_response_json,
    signature_inputs,
    status_json,
)

router = APIRouter(prefix="/v1/models", tags=["TF Serving REST"])
SIGNATURE_CACHE_TTL_S = 30.0

Name = Annotated[str, Path(description="model name")]
Version = Annotated[int, Path(ge=1, description="model version")]
Label = Annotated[str, Path(description="version label, e.g. stable")]

TF_ERROR = {
    "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}
}
TF_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": text, **TF_ERROR}
    for status, text in {
        400: "bad request",
        401: "API key missing",
        404: "model/version/label not found",
        413: "too large",
        422: "invalid path parameter",
        502: "model server failed",
        503: "model server unavailable",
        504: "deadline exceeded",
    }.items()
}
PREDICT_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {
                    "signature_name": {"type": "string"},
                    "instances": {"type": "array", "items": {}},
                    "inputs": {},
                },
            },
            "example": {"instances": [{"b64": "iVBORw0KGgo..."}]},
        }
    },
}


async def _status(core: GatewayCore, target: ModelTarget) -> JSONResponse:
    response = await core.model_status(core.status_request(target), core.settings.request_timeout_s)
    return JSONResponse(status_json(response))


async def _metadata(core: GatewayCore, target: ModelTarget) -> JSONResponse:
    response = await core.model_metadata(core.metadata_request(target), core.settings.request_timeout_s)
    return JSONResponse(metadata_json(response))


async def _predict(request: Request, core: GatewayCore, target: ModelTarget) -> JSONResponse:
    max_rows = core.settings.max_images_per_request
    # Rows are counted while the body streams in; parsing and converting (seconds for 23 MB of pixel values) run
    # in a worker process for big bodies, so that other requests on this event loop (HTTP and gRPC) keep going.
    body = await read_json_body(request, max_rows)
    signatures, metadata_error = await _signatures(request, core, target)
    converter: BodyConverter = request.app.state.body_converter
    converted = await converter.convert(body, max_rows, signatures)
    if converted is None:
        assert metadata_error is not None
        raise metadata_error  # the body itself is fine: the upstream's answer about the model is the error
    predict_request, row_format = converted
    target.apply_to(predict_request.model_spec)
    response = await core.predict(predict_request, core.settings.request_timeout_s)
    return JSONResponse(predict_response_json(response, row_format))


async def _signatures(
    request: Request, core: GatewayCore, target: ModelTarget
) -> tuple[SignatureInputs | None, GatewayError | None]:
    """The target's signatures and their input dtypes (JSON numbers need them), from upstream metadata cached
    for a few seconds; or the error that kept us from them, raised only once the body has been found valid."""
    cache: dict[ModelTarget, tuple[float, SignatureInputs]] = request.app.state.signature_cache
    cached = cache.get(target)
    if cached is not None and time.monotonic() - cached[0] < SIGNATURE_CACHE_TTL_S:
        return cached[1], None
    try:
        response = await core.model_metadata(core.metadata_request(target), core.settings.request_timeout_s)
    except GatewayError as error:
        return None, error
    signatures = signature_inputs(response)
    cache[target] = (time.monotonic(), signatures)
    return signatures, None


@router.get("/{name}", summary="Model status (all versions)", responses=TF_ERRORS)
async def model_status(name: Name, core: AuthenticatedCore) -> Any:
    return await _status(core, make_target(name))


@router.get("/{name}/versions/{version}", summary="Status of one version", responses=TF_ERRORS)
async def version_status(name: Name, version: Version, core: AuthenticatedCore) -> Any:
    return await _status(core, make_target(name, version=version))


@router.get("/{name}/labels/{label}", summary="Status of a labelled version", responses=TF_ERRORS)
async def label_status(name: Name, label: Label, core: AuthenticatedCore) -> Any:
    return await _status(core, make_target(name, label=label))


@router.get("/{name}/metadata", summary="Signature metadata (latest version)", responses=TF_ERRORS)
async def model_metadata(name: Name, core: AuthenticatedCore) -> Any:
    return await _metadata(core, make_target(name))


@router.get("/{name}/versions/{version}/metadata", summary="Signature metadata of one version", responses=TF_ERRORS)
async def version_metadata(name: Name, version: Version, core: AuthenticatedCore) -> Any:
    return await _metadata(core, make_target(name, version=version))


@router.get("/{name}/labels/{label}/metadata", summary="Signature metadata of a label", responses=TF_ERRORS)
async def label_metadata(name: Name, label: Label, core: AuthenticatedCore) -> Any:
    return await _metadata(core, make_target(name, label=label))


@router.post(
    "/{name}:predict",
    summary="Predict (stable label, else the newest version)",
    description=REST_PREDICT_DESCRIPTION,
    responses={**TF_ERRORS, **REST_PREDICT_OK},
    openapi_extra={"requestBody": PREDICT_BODY},
)
async def predict(request: Request, name: Name, core: AuthenticatedCore) -> Any:
    return await _predict(request, core, make_target(name))


@router.post(
    "/{name}/versions/{version}:predict",
    summary="Predict with one version",
    description=REST_PREDICT_DESCRIPTION,
    responses={**TF_ERRORS, **REST_PREDICT_OK},
    openapi_extra={"requestBody": PREDICT_BODY},
)
async def version_predict(request: Request, name: Name, version: Version, core: AuthenticatedCore) -> Any:
    return await _predict(request, core, make_target(name, version=version))


@router.post(
    "/{name}/labels/{label}:predict",
    summary="Predict with a labelled version",
    description=REST_PREDICT_DESCRIPTION,
    responses={**TF_ERRORS, **REST_PREDICT_OK},
    openapi_extra={"requestBody": PREDICT_BODY},
)
async def label_predict(request: Request, name: Name, label: Label, core: AuthenticatedCore) -> Any:
    return await _predict(request, core, make_target(name, label=label))
