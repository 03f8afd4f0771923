"""Move a version label (stable, canary) on a running model server without failing a request.

TF Serving only lets a label point at a loaded version, so a move is: (1) serve {old, new} and wait until
new is AVAILABLE, (2) point the label at new, (3) unload versions no label uses. Every step is an atomic
config write followed by HandleReloadConfigRequest, so a promote killed at any point leaves a config the
server accepts and that still serves the old label. Each finished move is appended to the audit log.
With several replicas (a ReplicaGroup) every reload goes to each of them, and a failure part-way puts the
ones that already moved back where the others are (see docs/promotion.md, "Several replicas"). With
`--all-replicas` the names are resolved again after the move, and a replica that appeared meanwhile is an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from promotion import replicas
from promotion.client import ServerError, ServingClient
from tlserve import audit
from tlserve.console import CommandError, Refused
from tlserve.contract import list_versions
from tlserve.models_config import (
    STABLE,
    ServedModel,
    absolute_config,
    config_lock,
    config_path,
    load_model,
    read_repository_config,
    save_model,
    version_path,
    write_config,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MoveOptions:
    """How a move talks to the server. `server` None means offline: only models.config is rewritten."""

    server: ServingClient | None = None  # one model server or a ReplicaGroup
    server_models_dir: Path | None = None  # models/ as the server sees it, when it runs elsewhere
    load_timeout_s: float = 120.0
    drain_s: float = 1.0  # grace before unloading the old version, for requests already routed to it
    unload: bool = True
    # --all-replicas: resolves the replicas afresh, to find any that became ready during the move.
    discover: Callable[[], Sequence[str]] | None = None


@dataclass(frozen=True)
class Move:
    model: str
    label: str
    old_version: int | None
    new_version: int
    changed: bool = True
    metrics: Mapping[str, Any] = field(default_factory=dict)


def move_label(
    models_dir: Path,
    name: str,
    version: int,
    *,
    label: str = STABLE,
    options: MoveOptions = MoveOptions(),
    action: str = "promote",
    reason: str = "",
    metrics: Mapping[str, Any] | None = None,
) -> Move:
    """Point `label` of model `name` at `version` (two-step when a server is given) and audit the move.

    The audit record is appended as soon as the label has moved (step 2), before the old version is
    unloaded: a failure or a kill during the unload cannot lose the record of a move that happened.
    """
    _require_version(models_dir, name, version)  # before the lock: a missing repository is never created
    with config_lock(models_dir):
        before = load_model(models_dir, name)
        _require_version(models_dir, name, version)
        old = before.labels.get(label)
        if old == version:
            _finish_interrupted(models_dir, before, options)
            return Move(name, label, old, version, changed=False)
        record = audit.AuditRecord(
            action, name, label, old, version, reason=reason, metrics=dict(metrics or {}), servers=_targets(options)
        )
        if options.server is None:
            save_model(models_dir, _with_label(before, label, version, models_dir).serving_labelled())
            audit.append_record(models_dir, record)
        else:
            labelled = _load_and_label(models_dir, before, label, version, options)
            audit.append_record(models_dir, record)
            _unload_unlabelled(models_dir, labelled, options)
            _require_no_newcomers(record, options)
        return Move(name, label, old, version, metrics=dict(metrics or {}))


def _targets(options: MoveOptions) -> tuple[str, ...]:
    """The replicas a move is sent to, for the audit record (none when offline)."""
    return () if options.server is None else tuple(replica.target for replica in options.server.replicas)


def _require_version(models_dir: Path, name: str, version: int) -> None:
    """CommandError unless the model exists (config entry or versions on disk) and has `version` on disk."""
    model = load_model(models_dir, name)
    if not version_path(models_dir, model, version).is_dir():
        raise CommandError(f"{name} has no version {version} under {models_dir}")


def _load_and_label(
    models_dir: Path, before: ServedModel, label: str, version: int, options: MoveOptions
) -> ServedModel:
    """Steps 1 and 2: serve {old, new} until new is AVAILABLE, then point the label at new. Returns that config."""
    assert options.server is not None
    original = read_repository_config(models_dir)
    loading = before.with_versions(_served_versions(models_dir, before) | {version})
    try:
        _apply(models_dir, loading, options)
        options.server.wait_available(before.name, version, timeout_s=options.load_timeout_s)
    except ServerError as exc:
        raise _set_back(exc, _restore(models_dir, original, options), options) from exc
    except TimeoutError as exc:
        _restore(models_dir, original, options)
        raise Refused(f"{before.name} version {version} did not become AVAILABLE, {label} unchanged: {exc}") from exc
    labelled = _with_label(loading, label, version, models_dir)
    try:
        _apply(models_dir, labelled, options)
    except ServerError as exc:
        step_one = save_model(models_dir, loading)  # the server kept the step-1 config; so must the file
        if len(options.server.replicas) == 1:
            raise
        # Replicas that already took step 2 go back to step 1.
        raise _set_back(exc, _reload_each(models_dir, step_one, options), options) from exc
    logger.info("%s: %s -> %s", before.name, label, version)
    return labelled


def _unload_unlabelled(models_dir: Path, labelled: ServedModel, options: MoveOptions) -> None:
    """Step 3: after the drain, serve only the labelled versions (the old one unloads)."""
    if not options.unload:
        return
    time.sleep(options.drain_s)
    try:
        _apply(models_dir, labelled.serving_labelled(), options)
    except ServerError:
        save_model(models_dir, labelled)  # the server kept serving the step-2 config; so must the file
        raise


def _require_no_newcomers(record: audit.AuditRecord, options: MoveOptions) -> None:
    """CommandError naming replicas that resolve now but were not in the move: they may serve older labels."""
    if options.discover is None or options.server is None:
        return
    newcomers = replicas.appeared(options.discover, options.server)
    if newcomers:
        raise CommandError(
            f"{record.model}: {record.label} moved to {record.new_version}, but {', '.join(newcomers)} became ready "
            "during the move and may serve the labels of an older models.config: restart it (it reads the file, "
            "now current, at start-up)"
        )


def _finish_interrupted(models_dir: Path, model: ServedModel, options: MoveOptions) -> None:
    """A move killed after its label step still serves the old version: unload it now (step 3)."""
    final = model.serving_labelled()
    if options.server is not None and options.unload and model.versions and final.versions != model.versions:
        _apply(models_dir, final, options)


def _with_label(model: ServedModel, label: str, version: int, models_dir: Path) -> ServedModel:
    """The label moved (`ServedModel.with_label_moved`), serving what the entry served plus `version`."""
    moved = model.with_label_moved(label, version)
    if not moved.versions:
        moved = moved.with_versions(_served_versions(models_dir, model) | {version})
    return moved


def _served_versions(models_dir: Path, model: ServedModel) -> set[int]:
    """What the entry serves now: its specific versions, or the latest on disk under the default policy."""
    if model.versions:
        return set(model.versions) | set(model.labels.values())
    on_disk = list_versions(version_path(models_dir, model, 0).parent)
    return set(on_disk[-1:]) | set(model.labels.values())


def _apply(models_dir: Path, model: ServedModel, options: MoveOptions) -> None:
    """Write the config atomically, then ask the server to serve exactly it."""
    config = save_model(models_dir, model)
    _reload(models_dir, config, options)


def _restore(models_dir: Path, original: Any, options: MoveOptions) -> list[str]:
    write_config(config_path(models_dir), original)
    return _reload_each(models_dir, original, options)


def _reload_each(models_dir: Path, config: Any, options: MoveOptions) -> list[str]:
    """Best effort, on every replica even when one refuses; returns (and logs) those that did not take it."""
    assert options.server is not None
    resolved = _server_config(models_dir, config, options)
    failed = []
    for replica in options.server.replicas:
        try:
            replica.reload(resolved)
        except ServerError as exc:
            logger.error("%s: set back in %s but not reloaded there: %s", replica.target, config_path(models_dir), exc)
            failed.append(replica.target)
    return failed


def _set_back(
    exc: ServerError, failed: Sequence[str], options: MoveOptions, done: str = "set back to the previous config"
) -> ServerError:
    """The error to raise after a set-back: one server's own, or the group's naming where it did not take."""
    assert options.server is not None
    return exc if len(options.server.replicas) == 1 else replicas.set_back_error(exc, failed, done)


def _reload(models_dir: Path, config: Any, options: MoveOptions) -> None:
    assert options.server is not None
    options.server.reload(_server_config(models_dir, config, options))


def _server_config(models_dir: Path, config: Any, options: MoveOptions) -> Any:
    """The config with relative base paths resolved as the server sees the repository."""
    return absolute_config(config, options.server_models_dir or models_dir.resolve())


def drop_label(
    models_dir: Path, name: str, label: str, *, options: MoveOptions = MoveOptions(), reason: str = ""
) -> int | None:
    """Remove `label` (e.g. a refused canary) and stop serving versions nothing else uses; returns its version."""
    with config_lock(models_dir):
        before = load_model(models_dir, name)
        old = before.labels.get(label)
        if old is None:
            return None
        after = _after_drop(before, label)
        record = audit.AuditRecord("unlabel", name, label, old, None, reason=reason, servers=_targets(options))
        if options.server is None:
            save_model(models_dir, after)
        else:
            config = save_model(models_dir, after)
            try:
                _reload(models_dir, config, options)
            except ServerError as exc:
                # The file drops the label; the replicas after the refusing one must drop it too.
                failed = _reload_each(models_dir, config, options)
                audit.append_record(models_dir, record)
                raise _set_back(exc, failed, options, done=f"{label} removed") from exc
        audit.append_record(models_dir, record)
        return old


def _after_drop(model: ServedModel, label: str) -> ServedModel:
    """The entry without `label`, serving the versions other labels use. With no label left, the versions it
    served besides the dropped one stay: a refused candidate must never end up as the only served version."""
    dropped = model.labels[label]
    rest = model.without_label(label)
    labelled = set(rest.labels.values())
    if labelled:
        return rest.with_versions(labelled)
    others = set(rest.versions) - {dropped}
    return rest.with_versions(others) if others else rest.serving_labelled()
