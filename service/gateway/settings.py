"""Gateway configuration: one frozen Settings object from `TLSERVE_*` environment variables (or passed in by tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.gateway.core.request_limits import DEFAULT_MAX_REQUEST_PIXELS
from service.gateway.upstream.target import check_upstream_target
from tlserve.contract import MAX_IMAGE_PIXELS

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Everything the gateway needs; build it once at the entry point and pass it down."""

    model_config = SettingsConfigDict(env_prefix="TLSERVE_", frozen=True, extra="ignore")

    upstream: str = Field(
        "localhost:8600",
        description="model server gRPC target: host:port, dns:///host:port or ipv4:addr:port,addr:port (replicas)",
    )
    upstream_lb_policy: Literal["pick_first", "round_robin"] = Field(
        "pick_first",
        description="gRPC load balancing over the upstream's addresses: pick_first (one) or round_robin (all)",
    )
    default_model: str | None = Field(
        None,
        min_length=1,
        description="model of requests that name none; unset = the only served model (several: name one)",
    )
    served_models: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated models the upstream is configured to serve (for /readyz and the default "
        "model); empty = from --repository, else --default-model",
    )
    repository: Path | None = Field(
        None,
        description="model repository the upstream loads (its models.config, else its model folders) naming the "
        "served models; tlserve serve sets it for the embedded model server",
    )
    http_host: str = "0.0.0.0"  # a container gateway listens on every interface
    http_port: int = Field(8000, ge=0, le=65535, description="0 picks a free port")
    grpc_port: int = Field(8500, ge=0, le=65535, description="0 picks a free port")

    request_timeout_s: float = Field(10.0, gt=0)
    upstream_retries: int = Field(2, ge=0, description="extra attempts after UNAVAILABLE")
    upstream_retry_backoff_s: float = Field(0.05, gt=0)
    upstream_max_message_bytes: int = Field(256 * MIB, gt=0)
    shutdown_grace_s: float = Field(10.0, gt=0)
    shutdown_drain_s: float = Field(
        1.0, ge=0, description="on stop, keep answering this long with Connection: close before closing the listener"
    )

    # Supervision of the embedded model server (`tlserve serve` without --upstream); see service.gateway.supervisor.
    model_server_max_restarts: int = Field(
        5, ge=0, description="embedded model server: restarts within the window before serve gives up (exit 2)"
    )
    model_server_restart_window_s: float = Field(300.0, gt=0, description="the window of model_server_max_restarts")
    model_server_restart_backoff_s: float = Field(
        0.5, gt=0, description="wait before restarting a crashed model server; doubles per crash in the window"
    )
    model_server_max_restart_backoff_s: float = Field(30.0, gt=0, description="cap of that wait")

    max_body_bytes: int = Field(32 * MIB, gt=0)
    max_images_per_request: int = Field(64, gt=0)
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, gt=0, description="per image; more is a decompression bomb (413)")
    max_request_pixels: int = Field(
        DEFAULT_MAX_REQUEST_PIXELS, gt=0, description="decoded pixels per request (sum over images, from headers; 413)"
    )
    default_top_k: int = Field(3, gt=0, le=5)
    json_offload_workers: int = Field(
        1, ge=0, description="processes that parse big TF-Serving REST JSON bodies off the event loop; 0 = none"
    )
    json_offload_min_body_bytes: int = Field(
        256 * 1024, gt=0, description="REST predict bodies this big or bigger are parsed in those processes"
    )

    batching_enabled: bool = True
    max_batch_size: int = Field(32, gt=0)
    batch_wait_timeout_s: float = Field(0.0, ge=0, description="extra wait for more requests when idle")
    max_concurrent_batches: int = Field(2, gt=0, description="per target; later requests queue and merge")

    api_keys: Annotated[tuple[str, ...], NoDecode] = Field((), description="comma-separated; empty disables auth")
    public_metrics: bool = Field(
        False,
        description="serve /metrics without an API key even when api_keys is set (it names the served models, "
        "versions and labels)",
    )
    canary_share: float = Field(0.0, ge=0, le=1, description="share of unpinned requests sent to canary_label")
    canary_label: str = Field("canary", pattern=r"^[a-zA-Z0-9_]+$")
    default_label: str = Field(
        "stable",
        pattern=r"^[a-zA-Z0-9_]*$",
        description="label for unpinned requests the canary share does not pick; empty = the server's latest",
    )

    @field_validator("upstream")
    @classmethod
    def _check_upstream(cls, value: str) -> str:
        return check_upstream_target(value)

    @field_validator("api_keys", "served_models", mode="before")
    @classmethod
    def _split_api_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value
