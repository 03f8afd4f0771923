"""The optional REST port (`--rest-api-port`): TF Serving's status and metadata GETs and its Prometheus route.

    GET /v1/models/{name}[/versions/{v}|/labels/{l}]            → GetModelStatusResponse as JSON (probes use it)
    GET /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   → GetModelMetadataResponse as JSON
    GET /monitoring/prometheus/metrics                          → `:tensorflow:serving:*` metrics

Prediction over REST is the gateway's job (`POST /v1/models/...:predict` there). Errors: `{"error": "..."}`.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from service.modelserver.core import ServingCore
from service.modelserver.errors import NotFound, ServingError

logger = logging.getLogger(__name__)

METRICS_PATH = "/monitoring/prometheus/metrics"
_MODEL_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[a-zA-Z0-9_]+))?(?P<metadata>/metadata)?$"
)


def _to_json(message: Any) -> Any:
    from google.protobuf import json_format

    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _request_with_spec(request: Any, match: re.Match[str]) -> Any:
    request.model_spec.name = match["name"]
    if match["version"]:
        request.model_spec.version.value = int(match["version"])
    elif match["label"]:
        request.model_spec.version_label = match["label"]
    return request


def model_route(core: ServingCore, path: str) -> Any:
    """JSON body for a /v1/models/... GET, raising ServingError like TF Serving's REST handler."""
    from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

    from service.modelserver.servicer import SIGNATURE_DEF_FIELD, model_metadata, model_status

    match = _MODEL_ROUTE.match(path)
    if match is None:
        raise NotFound(f"Malformed request: GET {path}")
    if not match["metadata"]:
        return _to_json(model_status(core, _request_with_spec(get_model_status_pb2.GetModelStatusRequest(), match)))
    request = _request_with_spec(get_model_metadata_pb2.GetModelMetadataRequest(), match)
    request.metadata_field.append(SIGNATURE_DEF_FIELD)
    response = model_metadata(core, request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata[SIGNATURE_DEF_FIELD].Unpack(signature_map)
    return {"model_spec": _to_json(response.model_spec), "metadata": {SIGNATURE_DEF_FIELD: _to_json(signature_map)}}


class _Handler(BaseHTTPRequestHandler):
    core: ServingCore  # set on the subclass built by RestServer
    server_version = "tlserve-model-server"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == METRICS_PATH:
            self._send(HTTPStatus.OK, self.core.metrics.render().encode(), "text/plain; version=0.0.4")
            return
        try:
            body = model_route(self.core, path)
            status = HTTPStatus.OK
        except ServingError as exc:
            body, status = {"error": exc.message}, HTTPStatus(exc.http_status)
        except Exception:
            logger.exception("REST GET %s failed", path)
            body, status = {"error": "internal error"}, HTTPStatus.INTERNAL_SERVER_ERROR
        self._send(status, json.dumps(body, indent=1).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("REST %s", format % args)


class RestServer:
    """A stdlib HTTP server on its own thread; `start()` returns the bound port."""

    def __init__(self, core: ServingCore, host: str, port: int) -> None:
        handler = type("RestHandler", (_Handler,), {"core": core})
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="rest-api", daemon=True)

    def start(self) -> int:
        self._thread.start()
        return int(self._httpd.server_address[1])

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
