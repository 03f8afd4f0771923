"""The protocol-neutral core of the model server: resolve a ModelSpec, validate, batch or run, reload configs.

gRPC (servicer.py) and REST (rest.py) only translate protos/JSON to calls here and errors back to codes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.modelserver.batching import Arrays, Batcher, batch_key
from service.modelserver.config import ModelServerConfig, resolve_base_paths
from service.modelserver.decode_errors import explain_invalid_argument, zero_rows_check
from service.modelserver.errors import InvalidArgument
from service.modelserver.manager import ModelManager
from service.modelserver.metrics import ServerMetrics
from service.modelserver.pixel_budget import (
    DEFAULT_MAX_INFLIGHT_PIXELS,
    DEFAULT_MAX_REQUEST_PIXELS,
    InflightPixels,
    check_request_pixels,
)
from service.modelserver.servable import Servable
from tlserve.contract import SIGNATURE_BYTES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    servable: Servable
    signature_name: str
    outputs: Arrays


class ServingCore:
    """Everything a request handler needs; built by ModelServer, shared by its gRPC and REST front ends."""

    def __init__(
        self,
        manager: ModelManager,
        *,
        metrics: ServerMetrics,
        batcher: Batcher | None = None,
        config_root: Path | None = None,
        max_request_pixels: int = DEFAULT_MAX_REQUEST_PIXELS,
        max_inflight_pixels: int = DEFAULT_MAX_INFLIGHT_PIXELS,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.batcher = batcher
        self.config_root = config_root
        self.max_request_pixels = max_request_pixels
        self.inflight_pixels = InflightPixels(max_inflight_pixels)

    def predict(
        self,
        servable: Servable,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        is_active: Callable[[], bool] = lambda: True,
    ) -> Prediction:
        """Validate like TF Serving and check the pixel budgets from headers, then run alone or batched."""
        signature_name = signature_name or SIGNATURE_BYTES
        servable.check_request(signature_name, inputs, output_filter)
        zero_rows_check(inputs)
        pixels = check_request_pixels(inputs, self.max_request_pixels)
        with self.inflight_pixels.reserve(pixels):
            try:
                outputs = self._run(servable, signature_name, inputs, tuple(output_filter), is_active)
            except InvalidArgument as exc:
                raise explain_invalid_argument(inputs, exc) from exc
        return Prediction(servable, signature_name, outputs)

    def _run(
        self,
        servable: Servable,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        filter_key: tuple[str, ...],
        is_active: Callable[[], bool],
    ) -> Arrays:

        def run(batch: Mapping[str, np.ndarray]) -> Arrays:
            return servable.run(signature_name, batch, filter_key)

        if self.batcher is None or any(value.ndim == 0 for value in inputs.values()):
            return run(inputs)
        key = batch_key(servable.name, servable.version, signature_name, filter_key, inputs)
        return self.batcher.submit(key, inputs, run, model_name=servable.name, is_active=is_active)

    def reload(self, config: ModelServerConfig) -> None:
        """HandleReloadConfigRequest: relative base paths are taken relative to the served config's directory."""
        if self.config_root is not None:
            resolve_base_paths(config, self.config_root)
        self.manager.apply_config(config)
