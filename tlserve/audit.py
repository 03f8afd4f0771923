"""The promotion audit log, `models/audit.jsonl`: one JSON object per label move (who, when, what, why).

Append-only; each record is written with a single `write` on an O_APPEND descriptor, so concurrent
writers never interleave lines. Rollback reads it to find the previous stable version.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from tlserve.contract import AUDIT_LOG_FILE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRecord:
    """One label move. `old_version` is None when the label did not exist before."""

    action: str  # "promote", "rollback", "retrain", "unload", "refused", "publish" (a label set by publishing)
    model: str
    label: str
    old_version: int | None
    new_version: int | None
    reason: str = ""
    metrics: Mapping[str, Any] = field(default_factory=dict)
    who: str = ""
    when: str = ""
    servers: tuple[str, ...] = ()  # the model server replicas the move was sent to; empty when offline

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def audit_path(models_dir: Path) -> Path:
    return models_dir / AUDIT_LOG_FILE


def current_user() -> str:
    """user@host, or TLSERVE_AUDIT_USER when a scheduler runs the job on someone's behalf."""
    override = os.environ.get("TLSERVE_AUDIT_USER")
    if override:
        return override
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def append_record(models_dir: Path, record: AuditRecord) -> AuditRecord:
    """Stamp who/when (unless set) and append; returns the record as written."""
    stamped = AuditRecord(
        **{
            **asdict(record),
            "who": record.who or current_user(),
            "when": record.when or dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"),
        }
    )
    line = (stamped.to_json() + "\n").encode("utf-8")
    models_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(audit_path(models_dir), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    logger.info(
        "audit: %s %s %s %s -> %s",
        stamped.action,
        stamped.model,
        stamped.label,
        describe_version(stamped.old_version),
        describe_version(stamped.new_version),
    )
    return stamped


def describe_version(version: int | None) -> str:
    """A version for people: its number, or `(none)` for a label that did not exist (never `None`)."""
    return "(none)" if version is None else str(version)


def read_records(models_dir: Path, model: str | None = None) -> list[AuditRecord]:
    """Every record (optionally for one model), oldest first; a torn last line from a crash is skipped."""
    path = audit_path(models_dir)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = _record(json.loads(line))
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            logger.warning("%s:%d: skipping unreadable audit line (%s)", path, number, exc)
            continue
        if model is None or record.model == model:
            records.append(record)
    return records


def _record(data: Mapping[str, Any]) -> AuditRecord:
    """A record from its JSON object; keys this version does not know (written by a newer one) are ignored."""
    known = {item.name for item in fields(AuditRecord)}
    values = {key: value for key, value in data.items() if key in known}
    if "servers" in values:
        values["servers"] = tuple(values["servers"])
    return AuditRecord(**values)


def label_stack(models_dir: Path, model: str, label: str) -> list[int]:
    """The label's versions as a stack, replayed from the log: a promote pushes, a rollback pops.

    So rolling back twice from 3 (after promoting 1, 2, 3) goes to 2 and then to 1, never back to 3.
    """
    stack: list[int] = []
    for record in read_records(models_dir, model):
        if record.label != label or record.new_version is None:
            continue
        if not stack and record.old_version is not None:
            stack.append(record.old_version)
        if record.action == "promote":
            stack.append(record.new_version)
        elif record.action == "rollback":
            while stack and stack[-1] != record.new_version:
                stack.pop()
            if not stack:
                stack.append(record.new_version)
    return stack
