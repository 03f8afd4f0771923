"""Promotion gates: each refuses a candidate that fails it, naming the gate and the numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from promotion import gates, probes
from promotion.gates import GateRefused, GateThresholds, Metrics, WarmupReport
from tests.conftest import CLASSES

THRESHOLDS = GateThresholds(accuracy_tolerance=0.02, min_class_recall=0.5, min_accuracy=0.7, latency_factor=1.5)


@pytest.fixture
def two_versions(tmp_path: Path, exported_version: Path) -> tuple[Path, Path]:
    stable, candidate = tmp_path / "1", tmp_path / "2"
    shutil.copytree(exported_version, stable)
    shutil.copytree(exported_version, candidate)
    return stable, candidate


def drop_signature(version_dir: Path, name: str) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    del saved.meta_graphs[0].signature_def[name]
    (version_dir / "saved_model.pb").write_bytes(saved.SerializeToString())


def test_signature_gate_passes_an_identical_export(two_versions: tuple[Path, Path]) -> None:
    result = gates.check_signature(*two_versions)
    assert result.passed, result.detail
    assert result.detail == "2 signatures match stable"


def test_signature_gate_refuses_a_missing_signature(two_versions: tuple[Path, Path]) -> None:
    stable, candidate = two_versions
    drop_signature(candidate, "predict_pixels")

    result = gates.check_signature(stable, candidate)
    assert not result.passed
    assert result.gate == "signature"
    assert "['serving_default'] != stable ['predict_pixels', 'serving_default']" in result.detail


def widen_outputs(version_dir: Path, classes: list[str]) -> None:
    """Make the export look trained on `classes`: labels.txt, and every per-class output's width."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    for name, signature in saved.meta_graphs[0].signature_def.items():
        if not name.startswith("__"):
            for info in signature.outputs.values():
                info.tensor_shape.dim[-1].size = len(classes)
    (version_dir / "saved_model.pb").write_bytes(saved.SerializeToString())
    (version_dir / "assets" / "labels.txt").write_text("".join(f"{name}\n" for name in classes))


def test_signature_gate_refuses_a_changed_class_list_unless_allowed(two_versions: tuple[Path, Path]) -> None:
    stable, candidate = two_versions
    widen_outputs(candidate, ["circle", "square", "star", "triangle"])  # a class added: 3 -> 4 outputs

    refused = gates.check_signature(stable, candidate)
    assert not refused.passed
    assert refused.detail == (
        "classes ['circle', 'square', 'star', 'triangle'] != stable ['circle', 'square', 'triangle'] "
        "(allow with --allow-class-change)"
    )
    allowed = gates.check_signature(stable, candidate, allow_class_change=True)
    assert allowed.passed, allowed.detail
    assert gates.read_signatures(candidate)["serving_default"]["outputs"]["probabilities"] == ("DT_FLOAT", (-1, 4))


def test_an_allowed_class_change_still_refuses_other_signature_changes(two_versions: tuple[Path, Path]) -> None:
    stable, candidate = two_versions
    widen_outputs(candidate, ["circle", "square"])  # a class removed
    drop_signature(candidate, "predict_pixels")

    result = gates.check_signature(stable, candidate, allow_class_change=True)
    assert not result.passed
    assert result.detail == "signatures ['serving_default'] != stable ['predict_pixels', 'serving_default']"


def test_signatures_are_read_with_dtypes_and_shapes(exported_version: Path) -> None:
    signatures = gates.read_signatures(exported_version)
    assert signatures["serving_default"]["inputs"] == {"image_bytes": ("DT_STRING", (-1,))}
    assert signatures["predict_pixels"]["outputs"]["probabilities"] == ("DT_FLOAT", (-1, len(CLASSES)))


def test_quality_gate_refuses_accuracy_below_stable_minus_tolerance() -> None:
    result = gates.check_quality(Metrics(0.85, {"a": 0.9}), Metrics(0.90, {"a": 0.9}), THRESHOLDS)
    assert not result.passed
    assert result.detail == "accuracy 0.850 < stable 0.900 - tolerance 0.020"


def test_quality_gate_accepts_accuracy_within_tolerance() -> None:
    result = gates.check_quality(Metrics(0.89, {"a": 0.9}), Metrics(0.90, {"a": 0.9}), THRESHOLDS)
    assert result.passed
    assert result.detail == "accuracy 0.890 vs stable 0.900"


def test_quality_gate_refuses_a_class_recall_below_the_floor() -> None:
    result = gates.check_quality(Metrics(0.95, {"cat": 0.99, "dog": 0.4}), Metrics(0.9), THRESHOLDS)
    assert not result.passed
    assert result.detail == "recall of 'dog' 0.400 < floor 0.500"


def test_first_model_is_held_only_to_absolute_thresholds() -> None:
    assert gates.check_quality(Metrics(0.75, {"a": 0.6}), None, THRESHOLDS).passed
    low = gates.check_quality(Metrics(0.65, {"a": 0.6}), None, THRESHOLDS)
    assert not low.passed
    assert low.detail == "accuracy 0.650 < minimum 0.700 (first model)"


def test_infra_gate_refuses_a_candidate_that_does_not_load() -> None:
    result = gates.check_infra(WarmupReport(loaded=False, error="bad variables"), None, THRESHOLDS)
    assert (result.gate, result.passed, result.detail) == ("infra", False, "candidate did not load: bad variables")


def test_infra_gate_refuses_failed_warmup_requests() -> None:
    report = WarmupReport(loaded=True, requests=4, failures=1, error="INVALID_ARGUMENT")
    result = gates.check_infra(report, None, THRESHOLDS)
    assert not result.passed
    assert result.detail == "1 of 4 warmup requests failed: INVALID_ARGUMENT"


def test_infra_gate_refuses_p95_beyond_the_factor_of_stable() -> None:
    slow = WarmupReport(loaded=True, requests=4, p95_s=0.040)
    stable = WarmupReport(loaded=True, requests=4, p95_s=0.020)
    result = gates.check_infra(slow, stable, THRESHOLDS)
    assert not result.passed
    assert result.detail == "p95 40.0 ms vs stable 20.0 ms x factor 1.5 = 30.0 ms"
    assert gates.check_infra(WarmupReport(loaded=True, requests=4, p95_s=0.029), stable, THRESHOLDS).passed


def test_refusal_message_lists_every_failed_gate_with_numbers() -> None:
    results = [
        gates.GateResult("signature", True, "2 signatures match stable"),
        gates.check_quality(Metrics(0.5), Metrics(0.9), THRESHOLDS),
        gates.check_infra(WarmupReport(loaded=False, error="boom"), None, THRESHOLDS),
    ]
    with pytest.raises(GateRefused) as refused:
        gates.require(results)
    assert str(refused.value) == (
        "quality gate refused: accuracy 0.500 < stable 0.900 - tolerance 0.020; "
        "infra gate refused: candidate did not load: boom"
    )
    assert refused.value.exit_code == 1


def test_percentile_is_nearest_rank() -> None:
    samples = [float(value) for value in range(1, 21)]
    assert gates.percentile(samples, 0.95) == 19.0
    assert gates.percentile([3.0], 0.95) == 3.0


def test_in_process_probe_replays_the_exports_warmup_requests(exported_version: Path) -> None:
    requests = probes.read_warmup_requests(exported_version)
    report = probes.probe_in_process(exported_version, requests, repeats=1)

    assert len(requests) == 4  # 3 single-image records + 1 batch of all
    assert (report.loaded, report.requests, report.failures) == (True, 4, 0)
    assert report.p95_s > 0


def test_in_process_probe_reports_a_version_that_does_not_load(tmp_path: Path, exported_version: Path) -> None:
    broken = tmp_path / "3"
    shutil.copytree(exported_version, broken)
    for path in (broken / "variables").iterdir():
        path.write_bytes(b"not a checkpoint")

    report = probes.probe_in_process(broken, probes.read_warmup_requests(exported_version), repeats=1)
    result = gates.check_infra(report, None, THRESHOLDS)
    assert not report.loaded
    assert not result.passed
    assert result.detail.startswith("candidate did not load: ")
