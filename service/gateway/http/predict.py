"""`POST /predict`: images as multipart files or JSON b64 instances → top-k labels per image."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.gateway.core.targets import Classification, make_target
from service.gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from service.gateway.http.auth import AuthenticatedCore
from service.gateway.http.body_limits import read_json_body
from service.gateway.http.tfserving_json import decode_b64, load_json
from tlserve.contract import MAX_TOP_K, top_k_problem

router = APIRouter(tags=["predict"])

EXAMPLE_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"


class LabelScoreOut(BaseModel):
    label: str
    score: float


class PredictionOut(BaseModel):
    label: str = Field(description="the most likely class")
    score: float
    top_k: list[LabelScoreOut]


class PredictAnswer(BaseModel):
    model: str
    version: int
    predictions: list[PredictionOut] = Field(description="one per image, in request order")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "demo",
                    "version": 3,
                    "predictions": [
                        {
                            "label": "circle",
                            "score": 0.97,
                            "top_k": [{"label": "circle", "score": 0.97}, {"label": "square", "score": 0.02}],
                        }
                    ],
                }
            ]
        }
    }


class B64Image(BaseModel):
    b64: str = Field(description="standard base64 of an encoded JPEG/PNG/BMP/GIF/WebP image")


class PredictJson(BaseModel):
    instances: list[B64Image] = Field(min_length=1)
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description=f"labels per image, 1 to {MAX_TOP_K}")

    @field_validator("top_k", mode="before")
    @classmethod
    def _one_top_k_rule(cls, value: object) -> object:
        """`true` is not 1, `"3"` is not 3: the rule of tlserve.contract, as for the query and `tlserve predict`."""
        problem = None if value is None else top_k_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": text, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for status, text in {
        400: "undecodable image, malformed JSON or base64",
        401: "API key missing or wrong",
        404: "unknown model, version or label",
        413: "body, image count or image pixels over the limit",
        415: "unsupported media type or image format",
        422: "request does not match the schema",
        429: "model server overloaded",
        502: "the model server failed in a way the gateway cannot name (its detail is logged)",
        503: "model server unavailable",
        504: "deadline exceeded",
    }.items()
}
REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
                "required": ["files"],
            }
        },
        "application/json": {
            "schema": PredictJson.model_json_schema(),
            "example": {"instances": [{"b64": EXAMPLE_B64}], "top_k": 3},
        },
    },
}


@router.post(
    "/predict",
    summary="Classify one or more images",
    description='Send images as multipart `files` or JSON `{"instances": [{"b64": ...}], "top_k": 3}`. '
    "Choose the model with `model` and at most one of `version` or `label`; otherwise the `stable` label "
    "answers (a `canary` share if configured), else the newest version.",
    responses=ERROR_RESPONSES,
    openapi_extra={"requestBody": REQUEST_BODY},
)
async def predict(
    request: Request,
    core: AuthenticatedCore,
    model: Annotated[str | None, Query(description="model name (default: the gateway's default model)")] = None,
    version: Annotated[int | None, Query(ge=1, description="pin a version")] = None,
    label: Annotated[str | None, Query(description="pin a version label, e.g. stable")] = None,
    top_k: Annotated[
        int | None, Query(ge=1, le=MAX_TOP_K, description="labels per image (multipart; JSON may say it)")
    ] = None,
) -> PredictAnswer:
    settings = core.settings
    for name, value in (("model", model), ("label", label)):
        if value == "":  # `?model=` must not silently mean the default model
            raise ValidationFailed(f"query parameter {name!r} is empty; give a name or leave the parameter out")
    target = make_target(core.default_model() if model is None else model, version, label)
    images, body_top_k, names = await read_images(request, settings.max_images_per_request)
    result = await core.classify(
        images, target, top_k or body_top_k or settings.default_top_k, settings.request_timeout_s, names
    )
    return to_answer(result)


async def read_images(request: Request, max_images: int) -> tuple[list[bytes], int | None, list[str]]:
    """The encoded images of a /predict body, the JSON body's top_k if it has one, and file names if known."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        images, names = await _read_multipart(request, max_images)
        return images, None, names
    if media_type == "application/json":
        images, body_top_k = _read_json(await read_json_body(request, max_images), max_images)
        return images, body_top_k, []
    raise UnsupportedMediaType(f"content type {media_type or '(none)'!r}; send multipart/form-data or application/json")


async def _read_multipart(request: Request, max_images: int) -> tuple[list[bytes], list[str]]:
    try:
        # Starlette's own caps sit above ours so that our limit answers with 413 and a clear message.
        form = await request.form(max_files=max_images + 1, max_fields=max_images + 16)
    except StarletteHTTPException as exc:
        if "Too many files" in str(exc.detail):
            raise PayloadTooLarge(f"more than the limit of {max_images} images in one request") from exc
        raise BadRequest(f"malformed multipart body: {exc.detail}") from exc
    try:
        return await _uploaded_images(form.getlist("files"), max_images)
    finally:
        await form.close()


async def _uploaded_images(uploads: list[Any], max_images: int) -> tuple[list[bytes], list[str]]:
    if not uploads:
        raise ValidationFailed('multipart body has no "files" part')
    if len(uploads) > max_images:
        raise PayloadTooLarge(f"{len(uploads)} images in one request, more than the limit of {max_images}")
    images, names = [], []
    for index, upload in enumerate(uploads):
        if not isinstance(upload, UploadFile):
            raise ValidationFailed(f'"files" part {index} is a text field, not a file')
        images.append(await upload.read())
        names.append(upload.filename or "")
    return images, names


def _read_json(body: bytes, max_images: int) -> tuple[list[bytes], int | None]:
    payload = load_json(body)
    try:
        parsed = PredictJson.model_validate(payload)
    except ValidationError as exc:
        raise ValidationFailed(describe_validation_errors(exc.errors())) from exc
    if len(parsed.instances) > max_images:
        raise PayloadTooLarge(f"{len(parsed.instances)} images in one request, more than the limit of {max_images}")
    return [decode_b64({"b64": item.b64}) for item in parsed.instances], parsed.top_k


def describe_validation_errors(errors: Any) -> str:
    """Pydantic's error list as one line: `where: what; ...`."""
    parts = [
        f"{'.'.join(str(part) for part in error.get('loc', ())) or 'body'}: {error.get('msg')}" for error in errors
    ]
    return "; ".join(parts) or "invalid request"


def to_answer(result: Classification) -> PredictAnswer:
    return PredictAnswer(
        model=result.model,
        version=result.version,
        predictions=[
            PredictionOut(
                label=item.label,
                score=item.score,
                top_k=[LabelScoreOut(label=entry.label, score=entry.score) for entry in item.top_k],
            )
            for item in result.predictions
        ],
    )
