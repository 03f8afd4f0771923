"""API documentation that works offline, and an OpenAPI document that validates.

- `/docs`: Swagger UI from the `swagger-ui-bundle` package's files, served by the gateway under
  `/docs/assets/` (FastAPI's default page loads them from a CDN: blank without internet). No online validator badge.
  ReDoc is not offered (it has no offline bundle here).
- `openapi()`: FastAPI's document with pydantic's `#/$defs/...` references inlined (they do not resolve from the
  document root) and every response's content type declared (e.g. /metrics `text/plain; version=0.0.4`).
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_ASSETS = "/docs/assets"
SWAGGER_PARAMETERS = {"validatorUrl": None}  # Swagger UI would fetch a badge from validator.swagger.io


def swagger_ui_dir() -> str:
    from swagger_ui_bundle import swagger_ui_path

    return str(swagger_ui_path)


def add_docs(app: FastAPI) -> None:
    """`/docs` with local assets and `app.openapi` replaced by `openapi(app)` (create the app with docs_url=None)."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_dir()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )

    def cached_openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi(app)
        return app.openapi_schema

    app.openapi = cached_openapi  # type: ignore[method-assign]


def openapi(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
        tags=app.openapi_tags,
    )
    inlined: dict[str, Any] = inline_local_defs(document)
    return inlined


def inline_local_defs(node: Any, defs: dict[str, Any] | None = None) -> Any:
    """Replace `{"$ref": "#/$defs/X"}` by a copy of X from the nearest enclosing `$defs`, and drop the `$defs`.

    pydantic's `model_json_schema()` refers to its own `$defs`, which only resolve inside that schema; embedded in
    an OpenAPI document (e.g. a hand-written requestBody) the reference points at the document root and is broken.
    """
    if isinstance(node, list):
        return [inline_local_defs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$defs" in node:
        defs = {**(defs or {}), **node["$defs"]}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/") and defs is not None:
        target = deepcopy(defs[ref.removeprefix("#/$defs/")])
        return inline_local_defs({**target, **{k: v for k, v in node.items() if k != "$ref"}}, defs)
    return {key: inline_local_defs(value, defs) for key, value in node.items() if key != "$defs"}


# TF Serving's REST :predict answers with every output of the signature; for tlserve models the three differ in order.
REST_PREDICT_DESCRIPTION = (
    "TF Serving's REST predict, proxied over gRPC. For tlserve models (`serving_default`) each prediction has:\n\n"
    "- `probabilities`: one float per class, in **label-index order** (the order of the model's "
    "`assets/labels.txt`, see GET .../metadata); sums to 1.\n"
    "- `classes`: the top K labels (K = min(5, number of classes)), **best first**.\n"
    "- `scores`: the probabilities of those `classes`, in the same (best-first) order.\n\n"
    "So `classes[0]`/`scores[0]` is the best label, while `probabilities[i]` belongs to label i. "
    'The row format (`instances`) answers `{"predictions": [...]}`, the columnar format (`inputs`) '
    'answers `{"outputs": {...}}`.'
)
_REST_PREDICTION = {
    "type": "object",
    "properties": {
        "probabilities": {
            "type": "array",
            "items": {"type": "number"},
            "description": "one per class, in label-index order (labels.txt order), not sorted",
        },
        "classes": {"type": "array", "items": {"type": "string"}, "description": "top K labels, best first"},
        "scores": {
            "type": "array",
            "items": {"type": "number"},
            "description": "the probabilities of `classes`, best first",
        },
    },
}
REST_PREDICT_OK: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "predictions (row format) or outputs (columnar format)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "predictions": {"type": "array", "items": _REST_PREDICTION},
                        "outputs": {"type": "object", "additionalProperties": True},
                    },
                }
            }
        },
    }
}
