"""Helpers for replica tests: a fake model server that starts refusing, fake replicas as a group, fake DNS."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

from promotion import replicas
from promotion.client import ModelServerClient
from tests.promotion.promote_fakes import FakeModelService, start_fake
from tlserve import models_config


class Refusing(FakeModelService):
    """Accepts `accepting` configs (the boot one included), then refuses every one, like a server gone wrong."""

    def __init__(self, models_dir: Path, accepting: int = 2, **kwargs) -> None:
        super().__init__(models_dir, **kwargs)
        self.accepting = accepting

    def HandleReloadConfigRequest(self, request, context):  # noqa: N802 (gRPC method name)
        from tensorflow_serving.apis import model_management_pb2

        if len(self.accepted) >= self.accepting:  # by default the boot config and a move's step 1
            return model_management_pb2.ReloadConfigResponse(status={"error_code": 13, "error_message": "disk full"})
        return super().HandleReloadConfigRequest(request, context)


@contextlib.contextmanager
def started_fakes(models_dir: Path, *fakes: FakeModelService) -> Iterator[list[str]]:
    """The fakes booted on the repository's config and served on free ports; yields their targets."""
    boot = models_config.absolute_config(models_config.read_config(models_dir / "models.config"), models_dir)
    started = []
    try:
        for fake in fakes:
            fake.boot(boot)
            started.append(start_fake(fake))
        yield [target for _, target in started]
    finally:
        for grpc_server, _ in started:
            grpc_server.stop(None)


@contextlib.contextmanager
def fake_group(models_dir: Path, *fakes: FakeModelService) -> Iterator[tuple[replicas.ReplicaGroup, list[str]]]:
    """started_fakes, connected as one replica group."""
    with started_fakes(models_dir, *fakes) as targets:
        group = replicas.ReplicaGroup([ModelServerClient(target) for target in targets])
        try:
            yield group, targets
        finally:
            group.close()


def fake_getaddrinfo(table: dict[str, list[tuple[int, str]]]):
    """socket.getaddrinfo answering from `table` (an empty list: no addresses); other names: not known."""

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port)) for family, address in table[host]
        ]

    return getaddrinfo
