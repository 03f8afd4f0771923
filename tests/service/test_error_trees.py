"""The gateway's and the model server's error trees read alike: the same attribute names, one code per class."""

from __future__ import annotations

import grpc
import pytest

from service.gateway import errors as gateway_errors
from service.modelserver import errors as modelserver_errors


def tree(base: type[Exception]) -> list[type[Exception]]:
    classes, pending = [], [base]
    while pending:
        cls = pending.pop()
        classes.append(cls)
        pending.extend(cls.__subclasses__())
    return classes


@pytest.mark.parametrize("base", [gateway_errors.GatewayError, modelserver_errors.ServingError])
def test_every_error_class_carries_http_status_grpc_status_and_a_distinct_code(base):
    classes = tree(base)
    assert len(classes) > 5
    for cls in classes:
        assert 400 <= cls.http_status < 600, cls
        assert isinstance(cls.grpc_status, grpc.StatusCode), cls
    codes = [cls.code for cls in classes]
    assert len(set(codes)) == len(codes), codes


def test_the_model_server_tree_uses_tf_serving_statuses():
    assert modelserver_errors.NotFound.grpc_status is grpc.StatusCode.NOT_FOUND
    assert modelserver_errors.NotFound.http_status == 404
    assert modelserver_errors.status_proto_fields(modelserver_errors.Unavailable("down")) == (14, "down")
