"""What a request names (model, version or label) and what the gateway answers (labels and scores per image)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.gateway.core.request_limits import check_label, check_model_name
from service.gateway.errors import BadRequest, NotFound
from tlserve.contract import LABEL_PATTERN, MODEL_NAME_PATTERN

MAX_VERSION = 2**63 - 1  # versions are int64 on the wire


@dataclass(frozen=True)
class ModelTarget:
    """Which model a request asked for: a version, a label, or neither (the server's latest)."""

    name: str
    version: int | None = None
    label: str | None = None
    routed: bool = False  # a label the gateway chose for an unpinned request (canary share, default label)

    @property
    def pinned(self) -> bool:
        return self.version is not None or self.label is not None

    def apply_to(self, model_spec: Any) -> None:
        model_spec.name = self.name
        if self.version is not None:
            model_spec.version.value = self.version
        elif self.label is not None:
            model_spec.version_label = self.label


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class ImagePrediction:
    label: str
    score: float
    top_k: list[LabelScore]


@dataclass(frozen=True)
class Classification:
    model: str
    version: int
    predictions: list[ImagePrediction]


def make_target(name: str, version: int | None = None, label: str | None = None) -> ModelTarget:
    """Check what the client named; never guess a substitute for something that does not exist."""
    check_model_name(name)
    if label is not None:
        check_label(label)
    if not MODEL_NAME_PATTERN.match(name):
        raise NotFound(f"model name {name!r} is not valid")
    if version is not None and label is not None:
        raise BadRequest("choose a version or a label, not both")
    if version is not None and not 1 <= version <= MAX_VERSION:
        raise NotFound(f"model {name!r} has no version {version}")
    if label is not None and not LABEL_PATTERN.match(label):
        raise NotFound(f"model {name!r} has no label {label!r}")
    return ModelTarget(name, version, label)
