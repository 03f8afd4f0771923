"""`tlserve serve` (the gateway, with the embedded model server as a child process) and `tlserve predict` (a client).

Without `--upstream`, `serve` runs `tlserve model-server` on the same models/ (loopback only) as a supervised child
(service.gateway.supervisor restarts it if it dies) and the gateway in this process; both stop together.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from service.gateway.settings import Settings
from service.gateway.settings_cli import add_settings_flags, build_settings, env_and_default, given_settings
from tlserve.console import CommandError, split_host_port
from tlserve.contract import MAX_TOP_K, top_k_problem
from tlserve.processes import LOOPBACK

if TYPE_CHECKING:
    from service.client import GrpcClient, HttpClient, Prediction
    from service.gateway.supervisor import ModelServerState, RestartPolicy

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `serve` and `predict`."""
    serve = subparsers.add_parser(
        "serve",
        help="run the gateway (HTTP + gRPC), with the embedded model server unless --upstream is given",
        description="Serve models/ over HTTP (/predict, TF-Serving REST) and gRPC (tensorflow.serving.*). "
        "Without --upstream the embedded model server runs as a child process and stops with the gateway.",
    )
    serve.add_argument(
        "--models-dir",
        type=Path,
        metavar="DIR",
        default=Path(os.environ.get("TLSERVE_MODELS_DIR", "models")),
        help="models/ of the embedded model server (env TLSERVE_MODELS_DIR; default models)",
    )
    serve.add_argument(
        "--upstream",
        metavar="TARGET",
        default=os.environ.get("TLSERVE_UPSTREAM"),
        help="use this model server (TF Serving in production) instead of starting the embedded one: HOST:PORT, "
        "dns:///HOST:PORT or ipv4:ADDR:PORT[,ADDR:PORT...] (several replicas: see --upstream-lb-policy) "
        "(env TLSERVE_UPSTREAM)",
    )
    # --upstream, --http-port and --grpc-port are Settings fields with hand-written flags (their dest is the field
    # name, so add_settings_flags leaves them alone). None = TLSERVE_HTTP_PORT / TLSERVE_GRPC_PORT or the default.
    serve.add_argument(
        "--http-port", type=_port, metavar="PORT", default=None, help=env_and_default(Settings, "http_port")
    )
    serve.add_argument(
        "--grpc-port", type=_port, metavar="PORT", default=None, help=env_and_default(Settings, "grpc_port")
    )
    serve.add_argument(
        "--model-server-port",
        type=_port,
        metavar="PORT",
        default=os.environ.get("TLSERVE_MODEL_SERVER_PORT", "8600"),  # a string default goes through _port too
        help="port of the embedded model server (env TLSERVE_MODEL_SERVER_PORT; default 8600)",
    )
    # Every other Settings field gets a flag derived from the model: --max-batch-size, --no-batching-enabled, ...
    add_settings_flags(serve, Settings, title="gateway settings")
    serve.set_defaults(handler=run_serve)

    predict = subparsers.add_parser(
        "predict",
        help="classify image files through a running gateway (HTTP or gRPC)",
        description="Print the top-k labels of each image, asked over HTTP (default) or gRPC.",
    )
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    target = predict.add_mutually_exclusive_group()
    target.add_argument("--url", default=None, help="gateway HTTP URL (default http://localhost:8000)")
    target.add_argument("--grpc", metavar="HOST:PORT", default=None, help="ask a gateway or TF Serving over gRPC")
    predict.add_argument(
        "--model",
        default=os.environ.get("TLSERVE_DEFAULT_MODEL"),
        help="model name (env TLSERVE_DEFAULT_MODEL; default: the gateway's default model; TF Serving needs one)",
    )
    predict.add_argument(
        "--top-k", type=_top_k, default=3, help=f"labels per image, 1 to {MAX_TOP_K} (HTTP and gRPC alike)"
    )
    predict.add_argument(
        "--api-key",
        default=os.environ.get("TLSERVE_API_KEY") or None,
        help="send this API key (HTTP header X-API-Key; gRPC metadata x-api-key) (env TLSERVE_API_KEY)",
    )
    predict.add_argument("--timeout", type=_positive_seconds, default=30.0, help="seconds per request")
    predict.set_defaults(handler=run_predict)


def _top_k(text: str) -> int:
    try:
        value: object = int(text)
    except ValueError:
        value = text
    problem = top_k_problem(value)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    assert isinstance(value, int)
    return value


def _port(text: str) -> int:
    port = _positive(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text}")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds: {text}")
    return value


# ---------------------------------------------------------------- serve


def run_serve(args: argparse.Namespace) -> int:
    """Check the ports, start the model server child if needed, run the gateway until it stops."""
    embedded = args.upstream is None
    upstream = f"{LOOPBACK}:{args.model_server_port}" if embedded else args.upstream
    settings = gateway_settings(args, upstream)
    if embedded and not args.models_dir.is_dir():
        raise CommandError(f"models directory not found: {args.models_dir}")
    ports = {"--http-port": settings.http_port, "--grpc-port": settings.grpc_port}
    if embedded:
        ports["--model-server-port"] = args.model_server_port
    _check_ports_free(ports)
    if not embedded:
        with _sigterm_raises(), contextlib.suppress(_Terminated):
            _run_gateway(settings)
        return 0
    return _serve_with_model_server(args, settings)


def _serve_with_model_server(args: argparse.Namespace, settings: Settings) -> int:
    """Run the gateway over a supervised embedded model server; exit 2 if the supervisor gave up on it."""
    from service.gateway.model_server_child import model_server_command, spawn_child
    from service.gateway.supervisor import ModelServerSupervisor

    command = model_server_command(
        args.models_dir, args.model_server_port, max_request_pixels=settings.max_request_pixels, verbose=args.verbose
    )
    supervisor = ModelServerSupervisor(
        lambda: spawn_child(command),
        restart_policy(settings),
        # A crash loop stops the gateway (gracefully), so the process manager above sees the failure.
        on_give_up=lambda: os.kill(os.getpid(), signal.SIGTERM),
    )
    logger.info("starting the embedded model server on %s:%d", LOOPBACK, args.model_server_port)
    try:
        with _sigterm_raises():
            try:
                supervisor.start()
                _run_gateway(settings, supervisor.state)
            finally:
                supervisor.stop()
    except _Terminated:
        logger.info("terminated before the gateway started")
    if supervisor.gave_up is not None:
        raise CommandError(supervisor.gave_up)
    return 0


def restart_policy(settings: Settings) -> RestartPolicy:
    """The embedded model server's restart budget and backoff from the model_server_* settings."""
    from service.gateway.supervisor import RestartPolicy

    return RestartPolicy(
        max_restarts=settings.model_server_max_restarts,
        window_s=settings.model_server_restart_window_s,
        backoff_s=settings.model_server_restart_backoff_s,
        max_backoff_s=settings.model_server_max_restart_backoff_s,
    )


def gateway_settings(args: argparse.Namespace, upstream: str) -> Settings:
    """Settings from the flags given, then `TLSERVE_*` environment variables, then defaults; bad values exit 2."""
    flags = {**given_settings(args, Settings), "upstream": upstream}
    if args.upstream is None and "repository" not in flags:
        flags["repository"] = args.models_dir  # the embedded server loads this repository: it names the models
    return build_settings(Settings, flags)


def _run_gateway(settings: Settings, model_server: ModelServerState | None = None) -> None:
    """Run HTTP + gRPC in this process until SIGTERM/SIGINT (service.gateway.server owns graceful shutdown)."""
    from service.gateway.server import serve_forever

    logger.info("gateway: http :%d, grpc :%d, upstream %s", settings.http_port, settings.grpc_port, settings.upstream)
    try:
        serve_forever(settings, model_server=model_server)
    except OSError as exc:
        raise CommandError(f"the gateway could not start: {exc.strerror or exc}") from None


def _check_ports_free(ports: dict[str, int]) -> None:
    if len(set(ports.values())) < len(ports):
        raise CommandError(f"ports must differ: {', '.join(f'{flag} {port}' for flag, port in ports.items())}")
    for flag, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # Same option as the servers use, so a TIME_WAIT leftover is not mistaken for a listener.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("", port))
            except OSError:
                raise CommandError(f"port {port} ({flag}) is already in use") from None


class _Terminated(Exception):
    """SIGTERM arrived before the gateway installed its own graceful handler."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into an exception while starting up, so `finally` blocks stop the child process."""

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- predict


def run_predict(args: argparse.Namespace) -> int:
    """Read the files first (a bad path costs no request), then ask the gateway, one line per image."""
    from service import client

    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would bury the answers
    images = [(str(path), _read_image(path)) for path in args.images]
    failures = 0
    try:
        with _make_client(args) as ask:
            for name, data in images:
                try:
                    prediction = ask.predict(data, filename=Path(name).name, top_k=args.top_k)
                except client.RejectedImage as exc:
                    print(f"{name}: error: {exc}", file=sys.stderr)
                    failures += 1
                    continue
                print(format_prediction(name, prediction))
    except client.ServerError as exc:
        raise CommandError(str(exc)) from None
    return 2 if failures else 0


def _make_client(args: argparse.Namespace) -> HttpClient | GrpcClient:
    from service.client import GrpcClient, HttpClient

    if args.grpc is not None:
        split_host_port(args.grpc, flag="--grpc")
        # Without --model the request names none: the gateway applies its default model rule (as over HTTP).
        return GrpcClient(args.grpc, model=args.model, timeout_s=args.timeout, api_key=args.api_key)
    url = args.url or "http://localhost:8000"
    return HttpClient(url, model=args.model, timeout_s=args.timeout, api_key=args.api_key)


def _read_image(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"no such file: {path}") from None
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def format_prediction(name: str, prediction: Prediction) -> str:
    """`cat.png  circle 0.9712  square 0.0201  triangle 0.0087  (demo v3)`"""
    ranked = "  ".join(f"{scored.label} {scored.score:.4f}" for scored in prediction.top_k)
    return f"{name}  {ranked}  ({prediction.model} v{prediction.version})"
