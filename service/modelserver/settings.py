"""Model server configuration: one frozen Settings object (env `TLSERVE_MODEL_SERVER_*`, `TLSERVE_MODELS_DIR`).

Field names follow TF Serving's flags (`--file_system_poll_wait_seconds` → `file_system_poll_wait_seconds`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.modelserver.pixel_budget import DEFAULT_MAX_INFLIGHT_PIXELS, DEFAULT_MAX_REQUEST_PIXELS

MAX_GRPC_MESSAGE_BYTES = 2**31 - 1  # what TF Serving sets (builder.SetMaxMessageSize(INT_MAX))


class ModelServerSettings(BaseSettings):
    """Everything `ModelServer` needs; the CLI builds it from flags, tests pass values directly."""

    model_config = SettingsConfigDict(env_prefix="TLSERVE_MODEL_SERVER_", frozen=True, extra="ignore")

    models_dir: Path = Field(default=Path("models"), validation_alias=AliasChoices("models_dir", "TLSERVE_MODELS_DIR"))
    model_config_file: Path | None = None
    model_name: str | None = None
    model_base_path: Path | None = None

    host: str = "0.0.0.0"  # TF Serving listens on every interface
    port: int = Field(default=8600, ge=0, le=65535, description="gRPC port; 0 picks a free one")
    rest_api_port: int = Field(
        default=0, ge=-1, le=65535, description="0 = off (TF Serving's default); -1 picks a free one"
    )

    file_system_poll_wait_seconds: float = Field(default=1.0, description="0 polls once at start, negative never")
    model_config_file_poll_wait_seconds: float = Field(default=0.0, ge=0, description="0 reads the config file once")
    enable_model_warmup: bool = True
    max_num_load_retries: int = Field(default=5, ge=0, description="a failed version is retried this often")
    load_retry_interval_s: float = Field(default=60.0, ge=0, description="TF Serving's load_retry_interval_micros")
    allow_version_labels_for_unavailable_models: bool = False

    enable_batching: bool = False
    batching_parameters_file: Path | None = None

    enable_grpc_healthcheck_service: bool = False
    grpc_max_threads: int = Field(default=16, gt=0)
    grpc_max_message_bytes: int = Field(default=MAX_GRPC_MESSAGE_BYTES, gt=0)
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    max_request_pixels: int = Field(
        default=DEFAULT_MAX_REQUEST_PIXELS, gt=0, description="decoded pixels per request, read from image headers"
    )
    max_inflight_pixels: int = Field(
        default=DEFAULT_MAX_INFLIGHT_PIXELS, gt=0, description="decoded pixels of all running requests together"
    )
