"""Run the whole gateway (HTTP via uvicorn + gRPC via grpc.aio) in one process, with graceful shutdown.

Entry points:
- `serve_forever(settings)`: blocking; SIGTERM/SIGINT → stop accepting, finish in-flight requests, return.
- `await serve(settings, stop=event, on_ready=callback, backend=None)`: the same inside a running event loop;
  `on_ready(GatewayPorts)` receives the bound ports (settings may ask for port 0), `stop.set()` shuts down.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from service.gateway.core.gateway_core import GatewayCore
from service.gateway.core.metrics import GatewayMetrics
from service.gateway.grpc.app import start_grpc_server
from service.gateway.http.app import create_app
from service.gateway.http.protocol import JsonErrorH11Protocol
from service.gateway.settings import Settings
from service.gateway.supervisor import FailFastBackend, ModelServerState
from service.gateway.upstream.backend import Backend, GrpcBackend

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayPorts:
    http_port: int
    grpc_port: int


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: `serve` owns the signals so it can stop gRPC as well."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def serve_forever(settings: Settings, *, model_server: ModelServerState | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully; `model_server` is the supervised embedded one."""
    asyncio.run(_serve_until_signalled(settings, model_server))


async def _serve_until_signalled(settings: Settings, model_server: ModelServerState | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(settings, stop=stop, model_server=model_server)


async def serve(
    settings: Settings,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[GatewayPorts], None] | None = None,
    backend: Backend | None = None,
    model_server: ModelServerState | None = None,
) -> None:
    """Start HTTP and gRPC on one core, call on_ready with the bound ports, serve until `stop` is set.

    With `model_server` (a supervised child), upstream calls fail fast while it is down and /metrics shows it.
    """
    if model_server is None:
        upstream = backend or GrpcBackend.from_settings(settings)
    else:
        state = model_server
        upstream = FailFastBackend(backend or GrpcBackend.from_settings(settings, is_available=lambda: state.up), state)
    metrics = GatewayMetrics()
    if model_server is not None:
        metrics.registry.register(model_server)
    core = GatewayCore(settings, upstream, metrics, random.Random())
    app = create_app(settings, core=core)
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        http=JsonErrorH11Protocol,
    )
    http = _HttpServer(config)
    http_task = asyncio.create_task(http.serve())
    try:
        await _wait_started(http, http_task)
        grpc_gateway = await start_grpc_server(core, settings.http_host, settings.grpc_port)
    except BaseException:
        http.should_exit = True
        await asyncio.gather(http_task, return_exceptions=True)
        await _close(core, upstream)
        raise
    ports = GatewayPorts(http_port=http.servers[0].sockets[0].getsockname()[1], grpc_port=grpc_gateway.port)
    logger.info("gateway ready: http :%d, grpc :%d, upstream %s", ports.http_port, ports.grpc_port, settings.upstream)
    if on_ready is not None:
        on_ready(ports)
    try:
        await _wait_for_stop(stop, http_task)
    finally:
        logger.info("gateway stopping: finishing in-flight requests (up to %.0fs)", settings.shutdown_grace_s)
        await _drain(app.state.draining, http_task, settings.shutdown_drain_s)
        # Both servers stop accepting at once; the upstream channel closes only after both have drained.
        http.should_exit = True
        await asyncio.gather(grpc_gateway.stop(settings.shutdown_grace_s), http_task, return_exceptions=True)
        await _close(core, upstream)
        logger.info("gateway stopped")


async def _close(core: GatewayCore, upstream: Backend) -> None:
    """The core (its batcher) first, then the upstream channel it sends on."""
    await core.close()
    await upstream.close()


async def _wait_started(http: uvicorn.Server, http_task: asyncio.Task[None]) -> None:
    while not http.started:
        if http_task.done():
            await http_task  # re-raises the startup failure, if any
            raise OSError(f"HTTP server did not start (port {http.config.port} in use?)")
        await asyncio.sleep(0.01)


async def _drain(draining: asyncio.Event, http_task: asyncio.Task[None], drain_s: float) -> None:
    """Keep answering for `drain_s`, every answer with `Connection: close`, so that keep-alive clients learn to
    reconnect (to another replica) instead of having their next request reset when the listener closes."""
    draining.set()
    if drain_s > 0 and not http_task.done():
        await asyncio.wait({http_task}, timeout=drain_s)


async def _wait_for_stop(stop: asyncio.Event, http_task: asyncio.Task[None]) -> None:
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({stop_task, http_task}, return_when=asyncio.FIRST_COMPLETED)
    stop_task.cancel()
