"""Roll a label back to the version it pointed at before, from the audit log, in one command."""

from __future__ import annotations

from pathlib import Path

from promotion.promote import Move, MoveOptions, move_label
from tlserve import audit
from tlserve.console import CommandError, Refused
from tlserve.models_config import STABLE, load_model


def rollback_target(models_dir: Path, name: str, label: str = STABLE) -> tuple[int, int]:
    """(current, previous) versions of `label` from the audit log; Refused when there is nothing to go back to."""
    current = load_model(models_dir, name).labels.get(label)
    if current is None:
        raise CommandError(f"{name} has no {label!r} label to roll back")
    stack = audit.label_stack(models_dir, name, label)
    if stack and stack[-1] == current:
        stack.pop()
    previous = [version for version in stack if version != current]
    if not previous:
        raise Refused(f"no previous {label} version of {name} in {audit.audit_path(models_dir)}")
    return current, previous[-1]


def rollback(
    models_dir: Path, name: str, *, label: str = STABLE, options: MoveOptions = MoveOptions(), reason: str = ""
) -> Move:
    """Put the previous `label` version back, in one command (the same two-step move underneath)."""
    _current, previous = rollback_target(models_dir, name, label)
    return move_label(
        models_dir, name, previous, label=label, options=options, action="rollback", reason=reason or "rollback"
    )
