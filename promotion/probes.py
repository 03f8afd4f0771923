"""Infra validation probes: replay a version's warmup requests and time them, on a model server or in-process.

Both versions are timed on the *candidate's* warmup requests, so the p95 comparison is like for like.
The first pass is untimed (it traces the graph, as TF Serving's own warmup does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promotion.client import ServerError, ServingClient
from promotion.gates import WarmupReport, percentile
from tlserve import contract

logger = logging.getLogger(__name__)


def read_warmup_requests(version_dir: Path) -> list[Any]:
    """The PredictRequests inside a version's tf_serving_warmup_requests file (empty when there is none)."""
    path = version_dir / contract.WARMUP_FILE
    if not path.is_file():
        return []
    from tlserve.protocol import prediction_log_pb2
    from tlserve.tfrecord import read_records

    requests = []
    for raw in read_records(path):
        log = prediction_log_pb2.PredictionLog.FromString(raw)
        requests.append(log.predict_log.request)
    return requests


def _timed(call: Callable[[Any], None], requests: list[Any], repeats: int) -> WarmupReport:
    """Run every request once untimed, then `repeats` timed passes; any failure is reported, not raised."""
    latencies: list[float] = []
    try:
        for request in requests:
            call(request)
        for _ in range(repeats):
            for request in requests:
                started = time.perf_counter()
                call(request)
                latencies.append(time.perf_counter() - started)
    except Exception as exc:  # any failure of the version under test is a gate result, not a crash
        return WarmupReport(loaded=True, requests=len(requests), failures=1, error=str(exc).splitlines()[0][:200])
    return WarmupReport(loaded=True, requests=len(requests), p95_s=percentile(latencies, 0.95) if latencies else 0.0)


def probe_on_server(
    server: ServingClient, name: str, version: int, requests: list[Any], *, repeats: int = 3
) -> WarmupReport:
    """Replay `requests` against `name`/`version` on a running model server (of a replica group: the first, once
    the version is AVAILABLE on all)."""
    if server.version_states(name).get(version) != "AVAILABLE":
        return WarmupReport(loaded=False, error=f"version {version} is not AVAILABLE on {server.target}")

    def call(template: Any) -> None:
        request = type(template)()
        request.CopyFrom(template)
        request.model_spec.name = name
        request.model_spec.version.value = version
        server.predict(request, timeout_s=60.0)

    try:
        return _timed(call, requests, repeats)
    except ServerError as exc:
        return WarmupReport(loaded=True, requests=len(requests), failures=1, error=str(exc))


def probe_in_process(version_dir: Path, requests: list[Any], *, repeats: int = 3) -> WarmupReport:
    """Load the SavedModel here and replay `requests` through its signatures (no model server running)."""
    import tensorflow as tf

    try:
        signatures = tf.saved_model.load(str(version_dir)).signatures
    except Exception as exc:  # a SavedModel that does not load is exactly what this gate is for
        return WarmupReport(loaded=False, error=str(exc).splitlines()[0][:200])

    def call(request: Any) -> None:
        signature = signatures[request.model_spec.signature_name or contract.SIGNATURE_BYTES]
        inputs = {key: tf.constant(tf.make_ndarray(tensor)) for key, tensor in request.inputs.items()}
        signature(**inputs)

    return _timed(call, requests, repeats)
