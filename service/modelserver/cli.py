"""`tlserve model-server`: the embedded TF-Serving-protocol model server as a command.

Once the initial models are loaded and the gRPC port is bound it prints exactly one line to stdout,

    model server listening on HOST:PORT

(PORT is the bound port, also with `--port 0`), which process launchers wait for. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

from tlserve.console import EXIT_OK, CommandError

logger = logging.getLogger(__name__)

READY_LINE = "model server listening on {host}:{port}"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `tlserve model-server`."""
    parser = subparsers.add_parser(
        "model-server",
        help="serve models/ over TF Serving's gRPC API (stand-in for tensorflow_model_server)",
        description="Serve TF Serving model versions over TF Serving's gRPC API (PredictionService, ModelService). "
        "Model selection: --model-config-file, else --model-name/--model-base-path, else --models-dir "
        "(its models.config if present, otherwise every model folder with the latest version).",
    )
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("TLSERVE_MODELS_DIR", "models")))
    parser.add_argument("--model-config-file", type=Path, help="text ModelServerConfig (TF Serving's models.config)")
    parser.add_argument("--model-name", help="serve one model under this name (with --model-base-path)")
    parser.add_argument("--model-base-path", type=Path, help="directory holding the model's version folders")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default: all interfaces)")
    parser.add_argument("--port", type=int, default=8600, help="gRPC port (0 = pick a free one; default 8600)")
    parser.add_argument("--rest-api-port", type=int, default=0, help="REST status/metrics port (0 = off)")
    parser.add_argument("--file-system-poll-wait-seconds", type=float, default=1.0)
    parser.add_argument("--model-config-file-poll-wait-seconds", type=float, default=0.0)
    parser.add_argument("--enable-batching", action="store_true", help="batch concurrent requests server-side")
    parser.add_argument(
        "--batching-parameters-file", "--batching-config", type=Path, help="text BatchingParameters (enables batching)"
    )
    parser.add_argument("--no-model-warmup", action="store_true", help="skip assets.extra/tf_serving_warmup_requests")
    parser.add_argument("--allow-version-labels-for-unavailable-models", action="store_true")
    parser.add_argument("--max-num-load-retries", type=int, default=5, help="retries of a version that failed to load")
    parser.add_argument("--load-retry-interval-micros", type=int, default=60_000_000, help="wait between load retries")
    parser.add_argument("--enable-grpc-healthcheck-service", action="store_true", help="grpc.health.v1.Health")
    parser.add_argument("--grpc-max-threads", type=int, default=16)
    parser.set_defaults(handler=run_model_server)


def settings_from_args(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from service.modelserver.settings import ModelServerSettings

    if (args.model_name is None) != (args.model_base_path is None):
        raise CommandError("--model-name and --model-base-path go together")
    try:
        return ModelServerSettings(
            models_dir=args.models_dir,
            model_config_file=args.model_config_file,
            model_name=args.model_name,
            model_base_path=args.model_base_path,
            host=args.host,
            port=args.port,
            rest_api_port=args.rest_api_port,
            file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
            model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
            enable_batching=args.enable_batching,
            batching_parameters_file=args.batching_parameters_file,
            enable_model_warmup=not args.no_model_warmup,
            allow_version_labels_for_unavailable_models=args.allow_version_labels_for_unavailable_models,
            max_num_load_retries=args.max_num_load_retries,
            load_retry_interval_s=args.load_retry_interval_micros / 1e6,
            enable_grpc_healthcheck_service=args.enable_grpc_healthcheck_service,
            grpc_max_threads=args.grpc_max_threads,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CommandError(f"--{'-'.join(str(part) for part in first['loc'])}: {first['msg']}") from None


def run_model_server(args: argparse.Namespace) -> int:
    from service.modelserver.errors import ServingError
    from service.modelserver.server import ModelServer

    settings = settings_from_args(args)
    server = ModelServer(settings)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        port = server.start()
    except ServingError as exc:
        server.stop(0)
        raise CommandError(exc.message) from None
    print(READY_LINE.format(host=settings.host, port=port), flush=True)
    if server.rest_port:
        print(f"model server REST API on {settings.host}:{server.rest_port}", flush=True)
    while not stop_requested.wait(1.0):
        pass
    server.stop()
    logger.info("model server stopped")
    return EXIT_OK
