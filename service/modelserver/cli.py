"""`tlserve model-server`: the embedded TF-Serving-protocol model server as a command.

Settings come from flags, else env `TLSERVE_MODEL_SERVER_<FIELD>` (and `TLSERVE_MODELS_DIR`), else the defaults in
`ModelServerSettings`; TF Serving's own flag spellings (`--model_config_file`, `--enable_batching`, ...) work too.
Once the initial models are loaded and the gRPC port is bound it prints exactly one line to stdout,

    model server listening on HOST:PORT

(PORT is the bound port, also with `--port 0`), which process launchers wait for. SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlserve.console import EXIT_OK, CommandError

if TYPE_CHECKING:
    from service.modelserver.server import ModelServer
    from service.modelserver.settings import ModelServerSettings

logger = logging.getLogger(__name__)

READY_LINE = "model server listening on {host}:{port}"
ENV_PREFIX = "TLSERVE_MODEL_SERVER_"
NOT_GIVEN = argparse.SUPPRESS  # a flag left out is absent from the namespace, so env and defaults still apply
# Settings fields whose flag is not "--" + the field name with dashes; everything else maps one to one.
FLAG_OF_FIELD = {"enable_model_warmup": "--no-model-warmup", "load_retry_interval_s": "--load-retry-interval-micros"}
ENV_OF_FIELD = {"models_dir": "TLSERVE_MODELS_DIR"}


def parse_bool(text: str) -> bool:
    """TF Serving's boolean flag values (`--enable_batching=false`)."""
    value = text.strip().lower()
    if value in {"true", "1", "yes"}:
        return True
    if value in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `tlserve model-server`; TF Serving's spelling of a flag is a second option string of the same flag."""
    parser = subparsers.add_parser(
        "model-server",
        help="serve models/ over TF Serving's gRPC API (stand-in for tensorflow_model_server)",
        description="Serve TF Serving model versions over TF Serving's gRPC API (PredictionService, ModelService). "
        "Model selection: --model-config-file, else --model-name/--model-base-path, else --models-dir "
        "(its models.config if present, otherwise every model folder with the latest version).",
        epilog=f"Every setting can also come from the environment, {ENV_PREFIX}<FIELD> (e.g. {ENV_PREFIX}PORT, "
        f"{ENV_PREFIX}ENABLE_BATCHING=true; the models directory from TLSERVE_MODELS_DIR). A flag given wins.",
        argument_default=NOT_GIVEN,
    )
    _add_model_flags(parser)
    _add_server_flags(parser)
    parser.set_defaults(handler=run_model_server)


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models-dir", type=Path, metavar="DIR", help="models/ to serve (env TLSERVE_MODELS_DIR; default models)"
    )
    parser.add_argument(
        "--model-config-file",
        "--model_config_file",
        type=Path,
        metavar="FILE",
        help="text ModelServerConfig (TF Serving's models.config)",
    )
    parser.add_argument(
        "--model-name", "--model_name", metavar="NAME", help="serve one model under this name (with --model-base-path)"
    )
    parser.add_argument(
        "--model-base-path",
        "--model_base_path",
        type=Path,
        metavar="DIR",
        help="directory holding the model's version folders",
    )
    parser.add_argument(
        "--file-system-poll-wait-seconds",
        "--file_system_poll_wait_seconds",
        type=float,
        metavar="SECONDS",
        help="default 1; <= 0: at start only",
    )
    parser.add_argument(
        "--model-config-file-poll-wait-seconds",
        "--model_config_file_poll_wait_seconds",
        type=float,
        metavar="SECONDS",
        help="default 0 = read the config file once",
    )
    parser.add_argument(
        "--no-model-warmup", dest="enable_model_warmup", action="store_false", help="skip assets.extra warmup records"
    )
    _add_bool_flag(parser, "--enable_model_warmup", help_text="TF Serving's spelling of the above (default true)")
    _add_bool_flag(
        parser, "--allow-version-labels-for-unavailable-models", "--allow_version_labels_for_unavailable_models"
    )
    parser.add_argument(
        "--max-num-load-retries",
        "--max_num_load_retries",
        type=int,
        metavar="N",
        help="retries of a version that failed (default 5)",
    )
    parser.add_argument(
        "--load-retry-interval-micros",
        "--load_retry_interval_micros",
        type=int,
        metavar="MICROS",
        help="wait between load retries (default 60000000)",
    )


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="address to bind (default 0.0.0.0: all interfaces)")
    parser.add_argument("--port", type=int, metavar="PORT", help="gRPC port (0 = pick a free one; default 8600)")
    parser.add_argument(
        "--rest-api-port",
        "--rest_api_port",
        type=int,
        metavar="PORT",
        help="REST status/metrics port (default 0 = off)",
    )
    _add_bool_flag(parser, "--enable-batching", "--enable_batching", help_text="batch concurrent requests server-side")
    parser.add_argument(
        "--batching-parameters-file",
        "--batching_parameters_file",
        "--batching-config",
        type=Path,
        metavar="FILE",
        help="text BatchingParameters (enables batching)",
    )
    _add_bool_flag(
        parser,
        "--enable-grpc-healthcheck-service",
        "--enable_grpc_healthcheck_service",
        help_text="grpc.health.v1.Health",
    )
    parser.add_argument(
        "--grpc-max-threads", "--grpc_max_threads", type=int, metavar="N", help="gRPC worker threads (default 16)"
    )
    parser.add_argument(
        "--max-request-pixels", type=int, metavar="N", help="decoded pixels per request, from headers (default 64M)"
    )
    parser.add_argument(
        "--max-inflight-pixels",
        type=int,
        metavar="N",
        help="decoded pixels of all running requests; more is RESOURCE_EXHAUSTED (default 256M)",
    )


def _add_bool_flag(parser: argparse.ArgumentParser, *names: str, help_text: str | None = None) -> None:
    """`--flag` alone means true; `--flag=false` as TF Serving accepts it."""
    parser.add_argument(*names, nargs="?", const=True, type=parse_bool, metavar="BOOL", help=help_text)


def settings_from_args(args: argparse.Namespace) -> ModelServerSettings:
    """The flags actually given override the environment, which overrides the defaults."""
    from pydantic import ValidationError

    from service.modelserver.settings import ModelServerSettings

    given = {name: value for name, value in vars(args).items() if name in ModelServerSettings.model_fields}
    if "load_retry_interval_micros" in vars(args):
        given["load_retry_interval_s"] = args.load_retry_interval_micros / 1e6
    try:
        settings = ModelServerSettings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        raise CommandError(f"{_source_of(field, given)}: {first['msg']}") from None
    if (settings.model_name is None) != (settings.model_base_path is None):
        raise CommandError("--model-name and --model-base-path go together")
    return settings


def _source_of(field: str, given: dict[str, Any]) -> str:
    """Name the flag or environment variable a bad value came from."""
    if field in given:
        return FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))
    return ENV_OF_FIELD.get(field, field if field.isupper() else ENV_PREFIX + field.upper())


def start_server(settings: ModelServerSettings) -> tuple[ModelServer, int]:
    """Load the initial models and bind the ports; a bad config or busy port becomes a one-line CommandError."""
    from service.modelserver.errors import ServingError
    from service.modelserver.server import ModelServer

    server = ModelServer(settings)
    try:
        port = server.start()
    except ServingError as exc:
        server.stop(0)
        raise CommandError(exc.message) from None
    return server, port


def run_model_server(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server, port = start_server(settings)
    print(READY_LINE.format(host=settings.host, port=port), flush=True)
    if server.rest_port:
        print(f"model server REST API on {settings.host}:{server.rest_port}", flush=True)
    while not stop_requested.wait(1.0):
        pass
    server.stop()
    logger.info("model server stopped")
    return EXIT_OK
