"""The metrics tlserve's dashboards and alerts may query, and a small reader for the names in PromQL text.

GATEWAY_METRICS is the design's "Metrics" list (docs/gateway.md) plus tlserve_upstream_predicts_total
(Predict outcomes by the label asked for, added for the canary alert);
TF_SERVING_METRICS is what TF Serving exports with
--monitoring_config_file (shared/reference/tf-serving.md §1.8). Values: (type, label names).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

GATEWAY_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "tlserve_requests_total": ("counter", frozenset({"protocol", "route", "code"})),
    "tlserve_request_duration_seconds": ("histogram", frozenset({"protocol", "route"})),
    "tlserve_upstream_duration_seconds": ("histogram", frozenset()),
    "tlserve_upstream_errors_total": ("counter", frozenset({"code"})),
    "tlserve_upstream_predicts_total": ("counter", frozenset({"label", "code"})),
    "tlserve_batch_size": ("histogram", frozenset()),
    "tlserve_batch_wait_seconds": ("histogram", frozenset()),
    "tlserve_inflight_requests": ("gauge", frozenset()),
    "tlserve_images_total": ("counter", frozenset({"model", "version"})),
    "tlserve_model_info": ("gauge", frozenset({"model", "version", "label"})),
}
TF_SERVING_METRICS: dict[str, tuple[str, frozenset[str]]] = {
    ":tensorflow:serving:request_count": ("counter", frozenset({"model_name", "status"})),
    ":tensorflow:serving:request_latency": ("histogram", frozenset({"model_name", "API", "entrypoint"})),
    ":tensorflow:serving:runtime_latency": ("histogram", frozenset({"model_name", "API", "runtime"})),
    ":tensorflow:serving:batching_session:queuing_latency": ("histogram", frozenset({"thread_pool_name"})),
    ":tensorflow:serving:batching_session:processed_batch_size": ("histogram", frozenset()),
    ":tensorflow:serving:batching_session:input_batch_size": ("histogram", frozenset()),
}
# Labels Prometheus adds to every scraped series, plus a histogram's bucket label.
TARGET_LABELS = frozenset({"job", "instance", "le"})
KNOWN = {**GATEWAY_METRICS, **TF_SERVING_METRICS, "up": ("gauge", frozenset())}

NAME = re.compile(r"(?<![\w:])(tlserve_\w+|:tensorflow:[\w:]+|up(?=\{))")
SELECTOR = re.compile(r"(?<![\w:])(tlserve_\w+|:tensorflow:[\w:]+|up)\{([^}]*)\}")
MATCHER = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
BY_CLAUSE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def base_name(series: str) -> str:
    """`tlserve_batch_size_bucket` → `tlserve_batch_size` (the family a series belongs to), when known."""
    for suffix in HISTOGRAM_SUFFIXES:
        family = series.removesuffix(suffix)
        if family != series and KNOWN.get(family, ("",))[0] == "histogram":
            return family
    return series


def metric_families(expr: str) -> set[str]:
    return {base_name(name) for name in NAME.findall(expr)}


def unknown_label_uses(expr: str) -> list[str]:
    """Labels an expression filters or groups by that none of its metrics carry."""
    families = metric_families(expr)
    available = set(TARGET_LABELS).union(*(KNOWN[family][1] for family in families if family in KNOWN))
    problems = []
    for name, matchers in SELECTOR.findall(expr):
        carried = KNOWN.get(base_name(name), ("", frozenset()))[1] | TARGET_LABELS
        problems += [f"{name}{{{label}}}" for label in MATCHER.findall(matchers) if label not in carried]
    for clause in BY_CLAUSE.findall(expr):
        labels = [label.strip() for label in clause.split(",") if label.strip()]
        problems += [f"by ({label})" for label in labels if label not in available]
    return problems


def legend_labels(legend: str) -> Iterable[str]:
    return re.findall(r"\{\{\s*(\w+)\s*\}\}", legend)
