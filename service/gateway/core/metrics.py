"""The gateway's Prometheus metrics (`tlserve_*`, listed in docs/gateway.md) on a private registry per app."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class GatewayMetrics:
    """Metric objects of one gateway; a private registry keeps tests and multiple apps apart."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        registry = self.registry
        self.requests = Counter(
            "tlserve_requests", "Requests answered", ["protocol", "route", "code"], registry=registry
        )
        self.request_duration = Histogram(
            "tlserve_request_duration_seconds",
            "Time to answer a request",
            ["protocol", "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "tlserve_upstream_duration_seconds", "Time of upstream calls", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.upstream_errors = Counter(
            "tlserve_upstream_errors", "Failed upstream calls by gRPC status", ["code"], registry=registry
        )
        self.upstream_predicts = Counter(
            "tlserve_upstream_predicts",
            "Upstream Predict calls by the version label asked for ('' = default) and gRPC status",
            ["label", "code"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "tlserve_batch_size", "Images per upstream Predict", buckets=BATCH_SIZE_BUCKETS, registry=registry
        )
        self.batch_wait = Histogram(
            "tlserve_batch_wait_seconds",
            "Time a request waited for its batch",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.inflight = Gauge("tlserve_inflight_requests", "Requests being answered", registry=registry)
        self.images = Counter("tlserve_images", "Images classified", ["model", "version"], registry=registry)
        self.model_info = Gauge(
            "tlserve_model_info",
            "1 for the version each label (empty = unpinned) last answered with",
            ["model", "version", "label"],
            registry=registry,
        )

    def render(self) -> bytes:
        """The text exposition format for GET /metrics."""
        return generate_latest(self.registry)
