"""The model server's errors: TensorFlow-style statuses, each with the gRPC code and REST status TF Serving uses.

    ServingError (500 INTERNAL "internal")
    ├── InvalidArgument (400 INVALID_ARGUMENT "invalid_argument")
    ├── NotFound (404 NOT_FOUND "not_found")
    ├── FailedPrecondition (400 FAILED_PRECONDITION "failed_precondition")
    ├── ResourceExhausted (429 RESOURCE_EXHAUSTED "resource_exhausted")
    ├── Unavailable (503 UNAVAILABLE "unavailable")
    ├── Cancelled (499 CANCELLED "cancelled")
    └── Unimplemented (501 UNIMPLEMENTED "unimplemented")

The attributes are named as in the gateway's tree (`service/gateway/errors.py`): `http_status`, `grpc_status` and
`code`. gRPC handlers abort with `grpc_status`; the REST port answers `http_status` with TF Serving's
`{"error": message}` (TF Serving's REST API carries no code string; `code` is not sent).
TensorFlow's own errors become members of this tree only in `from_tf_error`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc


class ServingError(Exception):
    """A failed request, carried to the client as a status code and TF Serving's message."""

    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    code: ClassVar[str] = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    http_status, grpc_status, code = 400, grpc.StatusCode.INVALID_ARGUMENT, "invalid_argument"


class NotFound(ServingError):
    http_status, grpc_status, code = 404, grpc.StatusCode.NOT_FOUND, "not_found"


class FailedPrecondition(ServingError):
    http_status, grpc_status, code = 400, grpc.StatusCode.FAILED_PRECONDITION, "failed_precondition"


class ResourceExhausted(ServingError):
    http_status, grpc_status, code = 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "resource_exhausted"


class Unavailable(ServingError):
    http_status, grpc_status, code = 503, grpc.StatusCode.UNAVAILABLE, "unavailable"


class Cancelled(ServingError):
    http_status, grpc_status, code = 499, grpc.StatusCode.CANCELLED, "cancelled"


class Unimplemented(ServingError):
    http_status, grpc_status, code = 501, grpc.StatusCode.UNIMPLEMENTED, "unimplemented"


_BY_TF_CODE: dict[int, type[ServingError]] = {
    1: Cancelled,
    3: InvalidArgument,
    5: NotFound,
    8: ResourceExhausted,
    9: FailedPrecondition,
    12: Unimplemented,
    14: Unavailable,
}


def from_tf_error(exc: Any) -> ServingError:
    """tf.errors.OpError → the same code and TensorFlow's message (as TF Serving passes them through)."""
    error_class = _BY_TF_CODE.get(int(getattr(exc, "error_code", 13)), ServingError)
    message = getattr(exc, "message", None) or str(exc)
    return error_class(message)


# gRPC sends the status message as a trailer, and clients drop trailers over 16 KiB (then report RESOURCE_EXHAUSTED
# "metadata size exceeds hard limit"): a message echoing a 20,000-character model name must be cut short.
MAX_STATUS_MESSAGE_CHARS = 1000


def bounded_message(message: str) -> str:
    """A status message short enough for a gRPC trailer, saying that it was cut."""
    if len(message) <= MAX_STATUS_MESSAGE_CHARS:
        return message
    return f"{message[:MAX_STATUS_MESSAGE_CHARS]}... ({len(message)} characters, cut)"


def status_proto_fields(error: ServingError | None) -> tuple[int, str]:
    """(error_code, error_message) for TF Serving's StatusProto (0, "" when OK)."""
    if error is None:
        return 0, ""
    return int(error.grpc_status.value[0]), error.message
