"""The optional grpc.health.v1 service (TF Serving's --enable_grpc_healthcheck_service)."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.modelserver import running_model_server


def test_grpc_health_service_answers_serving_when_enabled(module_repo):
    with running_model_server(module_repo(versions=(1,)), enable_grpc_healthcheck_service=True) as server:
        stub = health_pb2_grpc.HealthStub(server.channel())
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    assert response.status == health_pb2.HealthCheckResponse.SERVING
