"""The gateway's and the model server's error trees read alike: the same attribute names on the base class."""

from __future__ import annotations

import grpc
import pytest

from service.gateway.errors import GatewayError
from service.modelserver import errors as modelserver_errors


@pytest.mark.parametrize("base", [GatewayError, modelserver_errors.ServingError])
def test_each_tree_declares_http_status_grpc_status_and_code(base):
    assert {"http_status", "grpc_status", "code"} <= set(base.__annotations__)


def test_model_server_errors_have_distinct_codes_and_tf_servings_statuses():
    classes = [modelserver_errors.ServingError, *modelserver_errors.ServingError.__subclasses__()]
    assert len({cls.code for cls in classes}) == len(classes) == 8
    assert modelserver_errors.NotFound.grpc_status is grpc.StatusCode.NOT_FOUND
    assert modelserver_errors.NotFound.http_status == 404
    assert modelserver_errors.status_proto_fields(modelserver_errors.Unavailable("down")) == (14, "down")
