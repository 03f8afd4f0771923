"""`tlserve retrain` as a domain flow: train → publish → canary → gates → promote, or keep back and say why.

A refused candidate loses its canary label (so the gateway's canary share stops reaching it) but stays on
disk for inspection; the refusal, with every gate's numbers, is in the audit log and the exit message.
Each label move calls `connect` afresh (with --all-replicas the CLI resolves the replicas again), since
training takes hours. No argparse and no printing here: progress goes to `notify`, the outcome is returned
(`RetrainResult`) or raised (`RetrainRefused`, carrying the summary); `promotion.cli` prints both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promotion import gates, probes
from promotion.candidate import Baseline, describe, evaluate_on_holdout, find_baseline, retrain_config, warm_train
from promotion.gates import GateRefused, GateResult, GateThresholds, Metrics, WarmupReport
from promotion.promote import MoveOptions, drop_label, move_label
from promotion.retention import prune_versions
from tlserve import audit
from tlserve.console import CommandError, Refused
from tlserve.models_config import CANARY, STABLE, load_model

logger = logging.getLogger(__name__)

Connect = Callable[[], AbstractContextManager[MoveOptions]]
"""Opens the MoveOptions (server connection) for one step and closes it afterwards."""


@dataclass(frozen=True)
class RetrainOptions:
    """What one retrain is asked to do (`tlserve retrain`'s arguments, typed)."""

    data: Path
    name: str
    models_dir: Path
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    promote_if_better: bool = False
    reason: str = "retrain"
    keep: int = 0  # after a promotion, unlabelled versions beyond the newest N are deleted (0 keeps all)
    config_file: Path | None = None  # a training TOML laid over stable's recorded config
    overrides: Mapping[str, Any] = field(default_factory=dict)  # training flags, over both


@dataclass(frozen=True)
class RetrainResult:
    """A retrain that passed every gate: the JSON-ready summary, and whether the candidate became stable."""

    summary: dict[str, Any]

    @property
    def promoted(self) -> bool:
        return bool(self.summary.get("promoted"))


class RetrainRefused(GateRefused):
    """The candidate was kept back; `summary` holds every gate's numbers (what `--json` prints)."""

    def __init__(self, results: list[GateResult], summary: dict[str, Any]) -> None:
        super().__init__(results)
        self.summary = summary


def offline(options: MoveOptions | None = None) -> Connect:
    """A `connect` that always yields the same options (default: no server, only models.config is rewritten)."""

    @contextlib.contextmanager
    def same() -> Iterator[MoveOptions]:
        yield options if options is not None else MoveOptions()

    return same


def retrain(options: RetrainOptions, connect: Connect, notify: Callable[[str], None] = logger.info) -> RetrainResult:
    """The whole retrain; RetrainRefused (exit 1) when a gate keeps the candidate back."""
    if not options.data.is_dir():  # before TensorFlow is imported: a typo costs no start-up time
        raise CommandError(f"dataset folder not found: {options.data}")
    return RetrainFlow(options, connect, notify).run()


class RetrainFlow:
    """One retrain run; `run()` returns a RetrainResult or raises RetrainRefused / CommandError."""

    def __init__(self, options: RetrainOptions, connect: Connect, notify: Callable[[str], None]) -> None:
        self.options = options
        self.models_dir = options.models_dir
        self.name = options.name
        self.thresholds = options.thresholds
        self.move_options = connect
        self.notify = notify

    def run(self) -> RetrainResult:
        from training.publish import publish_run

        baseline = find_baseline(self.models_dir, self.name)
        config, run = retrain_config(
            baseline,
            data=self.options.data,
            name=self.name,
            models_dir=self.models_dir,
            config_file=self.options.config_file,
            overrides=self.options.overrides,
        )
        result, scan, warm = warm_train(config, run, baseline)
        self._pin_baseline(baseline)
        candidate = publish_run(result, self.models_dir, self.name)
        start = f"warm start from {baseline.version}" if warm else "trained from the base weights"
        self.notify(f"published {self.name} version {candidate} ({start})")
        load_error = self._label_canary(candidate)
        candidate_dir = self.models_dir / self.name / str(candidate)
        candidate_metrics = evaluate_on_holdout(candidate_dir, scan)
        stable_metrics = evaluate_on_holdout(baseline.version_dir, scan) if baseline.version_dir else None
        results = self._gates(baseline, candidate, candidate_dir, candidate_metrics, stable_metrics, load_error)
        summary = {
            "model": self.name,
            "candidate": candidate,
            "stable": baseline.version,
            "candidate_metrics": candidate_metrics.as_dict(),
            "stable_metrics": stable_metrics.as_dict() if stable_metrics else None,
            "gates": [{"gate": r.gate, "passed": r.passed, "detail": r.detail} for r in results],
        }
        self.notify(
            f"candidate {candidate} vs stable {baseline.version} on {candidate_metrics.examples} held-out images:"
        )
        self.notify(describe(results))
        if not all(result.passed for result in results):
            self._keep_back(candidate, results, summary)
        summary["promoted"] = self._maybe_promote(candidate, summary)
        return RetrainResult(summary)

    def _gates(
        self,
        baseline: Baseline,
        candidate: int,
        candidate_dir: Path,
        candidate_metrics: Metrics,
        stable_metrics: Metrics | None,
        load_error: str,
    ) -> list[GateResult]:
        results = []
        if baseline.version_dir is not None:
            results.append(
                gates.check_signature(
                    baseline.version_dir, candidate_dir, allow_class_change=self.thresholds.allow_class_change
                )
            )
        results.append(gates.check_quality(candidate_metrics, stable_metrics, self.thresholds))
        if load_error:
            results.append(gates.check_infra(WarmupReport(loaded=False, error=load_error), None, self.thresholds))
            return results
        candidate_probe, stable_probe = self._probe(baseline, candidate, candidate_dir)
        results.append(gates.check_infra(candidate_probe, stable_probe, self.thresholds))
        return results

    def _pin_baseline(self, baseline: Baseline) -> None:
        """Label the served baseline `stable` (a `specific` version policy) before the candidate appears on disk.

        Unpinned, a `latest` policy would make the server load the candidate and drop the baseline on its next
        file-system poll, before any gate ran, and every later label move would serve the labelled versions only.
        """
        if baseline.version is None or STABLE in load_model(self.models_dir, self.name).labels:
            return
        with self.move_options() as options:
            move_label(self.models_dir, self.name, baseline.version, label=STABLE, options=options,
                       reason="pin served version before retrain")  # fmt: skip
        self.notify(f"pinned {self.name} version {baseline.version} as {STABLE} (it was served without a label)")

    def _label_canary(self, candidate: int) -> str:
        """Label the candidate `canary` (loading it on the server); returns why it could not load, or ""."""
        try:
            with self.move_options() as options:
                move_label(self.models_dir, self.name, candidate, label=CANARY, options=options,
                           reason="retrain candidate")  # fmt: skip
        except Refused as exc:
            return str(exc)
        return ""

    def _probe(
        self, baseline: Baseline, candidate: int, candidate_dir: Path
    ) -> tuple[WarmupReport, WarmupReport | None]:
        """Replay the candidate's warmup requests on the server (or in-process offline), then stable's turn."""
        requests = probes.read_warmup_requests(candidate_dir)
        with self.move_options() as options:
            server = options.server
            if server is None:
                candidate_report = probes.probe_in_process(candidate_dir, requests)
                stable_dir = baseline.version_dir
                return candidate_report, probes.probe_in_process(stable_dir, requests) if stable_dir else None
            candidate_report = probes.probe_on_server(server, self.name, candidate, requests)
            if baseline.version is None:
                return candidate_report, None
            return candidate_report, probes.probe_on_server(server, self.name, baseline.version, requests)

    def _keep_back(self, candidate: int, results: list[GateResult], summary: dict[str, Any]) -> None:
        refusal = RetrainRefused(results, summary)
        summary.update(promoted=False, refused=str(refusal))
        try:
            with self.move_options() as options:
                drop_label(self.models_dir, self.name, CANARY, options=options, reason=f"refused: {refusal}")
        except CommandError as exc:
            # The refusal stands (exit 1, audited below); the log says which replica kept the canary label.
            logger.error("removing the canary label: %s", exc)
        record = audit.AuditRecord(
            "refused",
            self.name,
            STABLE,
            summary["stable"],
            candidate,
            reason=str(refusal),
            metrics=summary["candidate_metrics"],
        )
        audit.append_record(self.models_dir, record)
        self.notify(f"kept back: {self.name} version {candidate} stays off stable")
        raise refusal

    def _maybe_promote(self, candidate: int, summary: dict[str, Any]) -> bool:
        if not self.options.promote_if_better:
            self.notify(f"every gate passed; version {candidate} stays canary (add --promote-if-better to promote)")
            return False
        with self.move_options() as options:
            move_label(
                self.models_dir,
                self.name,
                candidate,
                label=STABLE,
                options=options,
                reason=self.options.reason,
                metrics=summary["candidate_metrics"],
            )
        self.notify(f"promoted: {self.name} stable {summary['stable']} -> {candidate}")
        if self.options.keep > 0:
            deleted = prune_versions(self.models_dir, self.name, keep=self.options.keep)
            self.notify(f"deleted old versions {deleted}" if deleted else "no old versions to delete")
        return True
