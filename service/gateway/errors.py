"""The one error tree of the online side: every error a client can see, with its HTTP status, gRPC code and stable code.

    GatewayError (500 INTERNAL "internal")
    ├── BadRequest (400 INVALID_ARGUMENT "bad_request")
    │   ├── InvalidImage (400 "invalid_image")
    │   └── InvalidJson (400 "invalid_json")
    ├── ValidationFailed (422 INVALID_ARGUMENT "validation_error")
    ├── Unauthenticated (401 UNAUTHENTICATED "unauthenticated")
    ├── NotFound (404 NOT_FOUND "not_found")
    ├── PayloadTooLarge (413 INVALID_ARGUMENT "payload_too_large")
    │   └── ImageTooLarge (413 "image_too_large")
    ├── UnsupportedMediaType (415 INVALID_ARGUMENT "unsupported_media_type")
    ├── Overloaded (429 RESOURCE_EXHAUSTED "overloaded")
    ├── BackendUnavailable (503 UNAVAILABLE "backend_unavailable")
    ├── DeadlineExceeded (504 DEADLINE_EXCEEDED "deadline_exceeded")
    └── BackendFailed (502 INTERNAL "backend_error")

HTTP (`error_response`) and gRPC (`grpc_abort_on_error`) read these attributes; nowhere else keeps a table.
Third-party errors become tree members only in `translate_errors`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, TypeVar

import grpc
import grpc.aio

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    """Base of every error a client can see."""

    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    code: ClassVar[str] = "internal"

    def __init__(self, message: str = "internal error") -> None:
        super().__init__(message)
        self.message = message

    @property
    def public_message(self) -> str:
        """What the client reads: exact for 4xx, generic for 5xx (the detail goes to the log)."""
        return self.message if self.http_status < 500 else _GENERIC_MESSAGES.get(self.code, "internal error")


class BadRequest(GatewayError):
    http_status, grpc_status, code = 400, grpc.StatusCode.INVALID_ARGUMENT, "bad_request"


class InvalidImage(BadRequest):
    code = "invalid_image"


class InvalidJson(BadRequest):
    code = "invalid_json"


class ValidationFailed(GatewayError):
    http_status, grpc_status, code = 422, grpc.StatusCode.INVALID_ARGUMENT, "validation_error"


class Unauthenticated(GatewayError):
    http_status, grpc_status, code = 401, grpc.StatusCode.UNAUTHENTICATED, "unauthenticated"


class NotFound(GatewayError):
    http_status, grpc_status, code = 404, grpc.StatusCode.NOT_FOUND, "not_found"


class PayloadTooLarge(GatewayError):
    http_status, grpc_status, code = 413, grpc.StatusCode.INVALID_ARGUMENT, "payload_too_large"


class ImageTooLarge(PayloadTooLarge):
    code = "image_too_large"


class UnsupportedMediaType(GatewayError):
    http_status, grpc_status, code = 415, grpc.StatusCode.INVALID_ARGUMENT, "unsupported_media_type"


class Overloaded(GatewayError):
    http_status, grpc_status, code = 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "overloaded"


class BackendUnavailable(GatewayError):
    http_status, grpc_status, code = 503, grpc.StatusCode.UNAVAILABLE, "backend_unavailable"


class DeadlineExceeded(GatewayError):
    http_status, grpc_status, code = 504, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline_exceeded"


class BackendFailed(GatewayError):
    http_status, grpc_status, code = 502, grpc.StatusCode.INTERNAL, "backend_error"


_GENERIC_MESSAGES = {
    "backend_unavailable": "the model server is unavailable, retry later",
    "deadline_exceeded": "the request did not finish within its deadline",
    "backend_error": "the model server failed to answer",
}

# Upstream (model server) status → the error we raise. Anything else is a BackendFailed (502, logged).
_UPSTREAM_ERRORS: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.UNAVAILABLE: BackendUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.FAILED_PRECONDITION: BadRequest,
    grpc.StatusCode.UNAUTHENTICATED: BackendFailed,
}


# TF Serving (and the embedded model server) answer an unknown version label with INVALID_ARGUMENT and this text.
# To our clients a label that does not exist is as missing as a version that does not: 404, never a 400.
UNKNOWN_LABEL_MESSAGE = "Unrecognized servable version label"


def from_upstream(exc: grpc.aio.AioRpcError) -> GatewayError:
    """The tree member for an upstream RPC failure; the model server's detail is kept for 4xx answers."""
    details = exc.details() or exc.code().name
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(UNKNOWN_LABEL_MESSAGE):
        return NotFound(details)
    error_class = _UPSTREAM_ERRORS.get(exc.code(), BackendFailed)
    return error_class(details)


@contextmanager
def translate_errors(*, decoding_images: bool = False) -> Iterator[None]:
    """Turn third-party errors raised inside the block into tree members (`raise ... from exc`).

    PIL signals corrupt data with plain OSError/SyntaxError, so those count as InvalidImage only in blocks that
    decode images; elsewhere they stay unexpected (500, logged).
    """
    from PIL import Image, UnidentifiedImageError

    image_errors: tuple[type[BaseException], ...] = (UnidentifiedImageError,)
    if decoding_images:
        image_errors += (SyntaxError, OSError)
    try:
        yield
    except GatewayError:
        raise
    except grpc.aio.AioRpcError as exc:
        raise from_upstream(exc) from exc
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image has too many pixels: {exc}") from exc
    except image_errors as exc:
        raise InvalidImage(f"cannot decode image: {exc}") from exc


def log_if_server_error(error: GatewayError) -> None:
    """5xx answers hide their detail from the client, so it goes to the log with the traceback."""
    if error.http_status >= 500:
        logger.error("request failed: %s: %s", error.code, error.message, exc_info=error)


ServicerMethod = TypeVar("ServicerMethod", bound=Callable[..., Awaitable[Any]])


def grpc_abort_on_error(method: ServicerMethod) -> ServicerMethod:
    """Decorate a grpc.aio servicer method: a GatewayError (or anything else) aborts the RPC with its status."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            with translate_errors():
                return await method(self, request, context)
        except GatewayError as error:
            log_if_server_error(error)
            await context.abort(error.grpc_status, error.public_message)
        except grpc.aio.AbortError:
            raise  # context.abort() signals through this exception; grpc.aio must see it unchanged.
        except Exception:  # the last line of defence: a generic INTERNAL, logged.
            logger.exception("unhandled error in %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")

    return wrapper  # type: ignore[return-value]
