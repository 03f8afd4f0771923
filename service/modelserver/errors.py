"""The model server's errors: TensorFlow-style statuses, each with the gRPC code and REST status TF Serving uses.

    ServingError (INTERNAL, 500)
    ├── InvalidArgument (INVALID_ARGUMENT, 400)
    ├── NotFound (NOT_FOUND, 404)
    ├── FailedPrecondition (FAILED_PRECONDITION, 400)
    ├── ResourceExhausted (RESOURCE_EXHAUSTED, 429)
    ├── Unavailable (UNAVAILABLE, 503)
    ├── Cancelled (CANCELLED, 499)
    └── Unimplemented (UNIMPLEMENTED, 501)

gRPC handlers abort with `grpc_code`; the REST port answers `http_status` with `{"error": message}`.
TensorFlow's own errors become members of this tree only in `from_tf_error`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import grpc


class ServingError(Exception):
    """A failed request, carried to the client as a status code and TF Serving's message."""

    grpc_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(ServingError):
    grpc_code, http_status = grpc.StatusCode.INVALID_ARGUMENT, 400


class NotFound(ServingError):
    grpc_code, http_status = grpc.StatusCode.NOT_FOUND, 404


class FailedPrecondition(ServingError):
    grpc_code, http_status = grpc.StatusCode.FAILED_PRECONDITION, 400


class ResourceExhausted(ServingError):
    grpc_code, http_status = grpc.StatusCode.RESOURCE_EXHAUSTED, 429


class Unavailable(ServingError):
    grpc_code, http_status = grpc.StatusCode.UNAVAILABLE, 503


class Cancelled(ServingError):
    grpc_code, http_status = grpc.StatusCode.CANCELLED, 499


class Unimplemented(ServingError):
    grpc_code, http_status = grpc.StatusCode.UNIMPLEMENTED, 501


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
    return int(error.grpc_code.value[0]), error.message
