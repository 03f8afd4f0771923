"""Promotion gates: a candidate version replaces stable only if it is compatible, as good, and as fast.

Each gate returns a GateResult naming itself and the numbers it compared, so a refusal can be acted on
("quality: accuracy 0.812 < stable 0.905 - tolerance 0.020") instead of guessed at.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlserve import contract
from tlserve.console import Refused


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"{self.gate}: {'pass' if self.passed else 'FAIL'} ({self.detail})"


class GateRefused(Refused):
    """At least one gate failed; the message lists every failed gate with its numbers."""

    def __init__(self, results: Sequence[GateResult]) -> None:
        self.results = list(results)
        failed = [result for result in self.results if not result.passed]
        super().__init__("; ".join(f"{result.gate} gate refused: {result.detail}" for result in failed))


@dataclass(frozen=True)
class GateThresholds:
    """Every knob of the gates (each is also a `tlserve retrain` flag)."""

    accuracy_tolerance: float = 0.01
    min_class_recall: float = 0.5
    min_accuracy: float = 0.6  # first model only: no stable to compare with
    latency_factor: float = 1.5
    allow_class_change: bool = False


@dataclass(frozen=True)
class Metrics:
    """Accuracy and per-class recall on the held-out split."""

    accuracy: float
    recall: Mapping[str, float] = field(default_factory=dict)
    examples: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "recall": dict(self.recall), "examples": self.examples}


def require(results: Sequence[GateResult]) -> list[GateResult]:
    """Raise GateRefused unless every result passed."""
    if not all(result.passed for result in results):
        raise GateRefused(results)
    return list(results)


# --- signature compatibility -------------------------------------------------------------------------------------

SignatureSpec = dict[str, dict[str, dict[str, tuple[str, tuple[int, ...]]]]]


def read_signatures(version_dir: Path) -> SignatureSpec:
    """{signature: {"inputs"|"outputs": {name: (dtype, shape)}}} straight from saved_model.pb."""
    from tlserve.protocol import saved_model_pb2, types_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    signatures: SignatureSpec = {}
    for name, signature in saved.meta_graphs[0].signature_def.items():
        if name.startswith("__"):
            continue  # __saved_model_init_op and friends are not client-visible
        signatures[name] = {
            side: {
                key: (types_pb2.DataType.Name(info.dtype), tuple(dim.size for dim in info.tensor_shape.dim))
                for key, info in getattr(signature, side).items()
            }
            for side in ("inputs", "outputs")
        }
    return signatures


def read_classes(version_dir: Path) -> list[str]:
    path = version_dir / contract.LABELS_FILE
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def check_signature(stable_dir: Path, candidate_dir: Path, *, allow_class_change: bool = False) -> GateResult:
    """Same signature names, inputs and outputs (dtype and shape) as stable; same classes unless allowed."""
    stable, candidate = read_signatures(stable_dir), read_signatures(candidate_dir)
    stable_classes, candidate_classes = read_classes(stable_dir), read_classes(candidate_dir)
    if stable_classes != candidate_classes:
        # A class added or removed changes the probabilities' width: that is the class change, not a new signature.
        stable = _without_class_dimension(stable)
        candidate = _without_class_dimension(candidate)
    problems = _signature_differences(stable, candidate)
    if stable_classes != candidate_classes and not allow_class_change:
        problems.append(f"classes {candidate_classes} != stable {stable_classes} (allow with --allow-class-change)")
    if problems:
        return GateResult("signature", False, "; ".join(problems))
    return GateResult("signature", True, f"{len(candidate)} signatures match stable")


def _signature_differences(stable: SignatureSpec, candidate: SignatureSpec) -> list[str]:
    problems = []
    if set(stable) != set(candidate):
        problems.append(f"signatures {sorted(candidate)} != stable {sorted(stable)}")
    for name in sorted(set(stable) & set(candidate)):
        for side in ("inputs", "outputs"):
            if stable[name][side] != candidate[name][side]:
                problems.append(f"{name} {side} {candidate[name][side]} != stable {stable[name][side]}")
    return problems


def _without_class_dimension(spec: SignatureSpec) -> SignatureSpec:
    """The spec with every output's last dimension masked: probabilities, classes and scores are per class
    (top k = every class, capped), so their width follows the class count."""
    return {name: {"inputs": sides["inputs"], "outputs": _masked(sides["outputs"])} for name, sides in spec.items()}


def _masked(outputs: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {key: (dtype, (*shape[:-1], -2) if shape else shape) for key, (dtype, shape) in outputs.items()}


# --- quality ------------------------------------------------------------------------------------------------------


def check_quality(candidate: Metrics, stable: Metrics | None, thresholds: GateThresholds) -> GateResult:
    """Accuracy ≥ stable − tolerance (or ≥ min_accuracy for a first model) and every class recall ≥ floor."""
    problems = []
    if stable is None:
        if candidate.accuracy < thresholds.min_accuracy:
            problems.append(f"accuracy {candidate.accuracy:.3f} < minimum {thresholds.min_accuracy:.3f} (first model)")
    elif candidate.accuracy < stable.accuracy - thresholds.accuracy_tolerance:
        problems.append(
            f"accuracy {candidate.accuracy:.3f} < stable {stable.accuracy:.3f} - tolerance "
            f"{thresholds.accuracy_tolerance:.3f}"
        )
    for name, recall in sorted(candidate.recall.items()):
        if recall < thresholds.min_class_recall:
            problems.append(f"recall of {name!r} {recall:.3f} < floor {thresholds.min_class_recall:.3f}")
    if problems:
        return GateResult("quality", False, "; ".join(problems))
    baseline = "first model" if stable is None else f"stable {stable.accuracy:.3f}"
    return GateResult("quality", True, f"accuracy {candidate.accuracy:.3f} vs {baseline}")


# --- infra ----------------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    if not values:
        raise ValueError("no samples")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


@dataclass(frozen=True)
class WarmupReport:
    """What the infra probe saw when it replayed a version's warmup requests against the model server."""

    loaded: bool
    requests: int = 0
    failures: int = 0
    p95_s: float = 0.0
    error: str = ""


def check_infra(candidate: WarmupReport, stable: WarmupReport | None, thresholds: GateThresholds) -> GateResult:
    """The candidate loaded, answered every warmup request, and its p95 is within a factor of stable's."""
    if not candidate.loaded:
        return GateResult("infra", False, f"candidate did not load: {candidate.error or 'not AVAILABLE'}")
    if candidate.requests == 0:
        return GateResult("infra", False, "candidate has no warmup requests to validate with")
    if candidate.failures:
        return GateResult(
            "infra", False, f"{candidate.failures} of {candidate.requests} warmup requests failed: {candidate.error}"
        )
    if stable is None or stable.requests == 0 or stable.p95_s <= 0:
        return GateResult("infra", True, f"p95 {candidate.p95_s * 1000:.1f} ms (no stable to compare)")
    limit = stable.p95_s * thresholds.latency_factor
    detail = (
        f"p95 {candidate.p95_s * 1000:.1f} ms vs stable {stable.p95_s * 1000:.1f} ms x factor "
        f"{thresholds.latency_factor:g} = {limit * 1000:.1f} ms"
    )
    return GateResult("infra", candidate.p95_s <= limit, detail)
