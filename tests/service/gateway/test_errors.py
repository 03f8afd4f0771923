"""The one error tree: statuses on the classes, translation of third-party errors at the boundary."""

from __future__ import annotations

import grpc
import pytest

from service.gateway import errors
from tests.service.gateway.fakes import rpc_error


def all_error_classes() -> list[type[errors.GatewayError]]:
    found, todo = [], [errors.GatewayError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_has_a_distinct_code_and_consistent_statuses():
    classes = [cls for cls in all_error_classes() if cls.__module__ == errors.__name__]
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes))
    for cls in classes:
        assert 400 <= cls.http_status < 600
        assert isinstance(cls.grpc_status, grpc.StatusCode)
        assert cls.grpc_status != grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (grpc.StatusCode.UNAVAILABLE, errors.BackendUnavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceeded),
        (grpc.StatusCode.NOT_FOUND, errors.NotFound),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.BadRequest),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.Overloaded),
        (grpc.StatusCode.DATA_LOSS, errors.BackendFailed),
    ],
)
def test_upstream_rpc_errors_become_tree_members_with_their_cause(code, error_class):
    with pytest.raises(error_class) as caught, errors.translate_errors():
        raise rpc_error(code, "upstream says no")
    assert type(caught.value) is error_class
    assert isinstance(caught.value.__cause__, grpc.aio.AioRpcError)


def test_server_errors_hide_their_detail_and_client_errors_show_it():
    assert (
        errors.BackendUnavailable("10.0.0.3:8500 refused").public_message
        == "the model server is unavailable, retry later"
    )
    assert errors.InvalidImage("image 2 is truncated").public_message == "image 2 is truncated"


def test_os_errors_are_invalid_images_only_while_decoding_images():
    with pytest.raises(errors.InvalidImage), errors.translate_errors(decoding_images=True):
        raise OSError("image file is truncated")
    with pytest.raises(OSError, match="disk"), errors.translate_errors():
        raise OSError("disk full")
