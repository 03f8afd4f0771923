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
from service.modelserver.manager import ModelManager
from service.modelserver.metrics import ServerMetrics
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
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.batcher = batcher
        self.config_root = config_root

    def predict(
        self,
        servable: Servable,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] = (),
        is_active: Callable[[], bool] = lambda: True,
    ) -> Prediction:
        """Validate like TF Serving, then run alone or through the shared batch scheduler."""
        signature_name = signature_name or SIGNATURE_BYTES
        servable.check_request(signature_name, inputs, output_filter)
        filter_key = tuple(output_filter)

        def run(batch: Mapping[str, np.ndarray]) -> Arrays:
            return servable.run(signature_name, batch, filter_key)

        if self.batcher is None or any(value.ndim == 0 for value in inputs.values()):
            outputs = run(inputs)
        else:
            key = batch_key(servable.name, servable.version, signature_name, filter_key, inputs)
            outputs = self.batcher.submit(key, inputs, run, model_name=servable.name, is_active=is_active)
        return Prediction(servable, signature_name, outputs)

    def reload(self, config: ModelServerConfig) -> None:
        """HandleReloadConfigRequest: relative base paths are taken relative to the served config's directory."""
        if self.config_root is not None:
            resolve_base_paths(config, self.config_root)
        self.manager.apply_config(config)
