"""The audit log: who/when/what/why records, crash-torn lines, and the stable history rollback reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from tlserve import audit
from tlserve.audit import AuditRecord


def test_record_is_stamped_with_who_and_when(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLSERVE_AUDIT_USER", "cronjob/retrain")
    written = audit.append_record(tmp_path, AuditRecord("promote", "demo", "stable", 1, 2, reason="nightly"))

    [read] = audit.read_records(tmp_path)
    assert read == written
    assert read.who == "cronjob/retrain"
    assert read.when.startswith("20")


def test_a_torn_last_line_is_skipped_not_fatal(tmp_path: Path) -> None:
    audit.append_record(tmp_path, AuditRecord("promote", "demo", "stable", None, 1))
    with audit.audit_path(tmp_path).open("a") as handle:
        handle.write('{"action": "promote", "model": "de')  # a crash mid-write

    assert [record.new_version for record in audit.read_records(tmp_path)] == [1]


def test_servers_round_trip_and_fields_from_a_newer_version_are_ignored(tmp_path: Path) -> None:
    audit.append_record(tmp_path, AuditRecord("promote", "demo", "stable", 1, 2, servers=("a:8500", "b:8500")))
    with audit.audit_path(tmp_path).open("a") as handle:
        handle.write('{"action": "rollback", "model": "demo", "label": "stable", "old_version": 2, '
                     '"new_version": 1, "written_by": "a newer tlserve"}\n')  # fmt: skip

    first, second = audit.read_records(tmp_path)
    assert first.servers == ("a:8500", "b:8500")
    assert (second.action, second.new_version, second.servers) == ("rollback", 1, ())
    assert audit.label_stack(tmp_path, "demo", "stable") == [1]


def test_label_stack_pushes_promotes_and_pops_rollbacks(tmp_path: Path) -> None:
    for action, old, new in [("promote", 3, 4), ("promote", 4, 5), ("rollback", 5, 4), ("promote", 4, 6)]:
        audit.append_record(tmp_path, AuditRecord(action, "demo", "stable", old, new))
    audit.append_record(tmp_path, AuditRecord("promote", "demo", "canary", None, 9))
    audit.append_record(tmp_path, AuditRecord("promote", "other", "stable", None, 1))

    assert audit.label_stack(tmp_path, "demo", "stable") == [3, 4, 6]
    assert audit.label_stack(tmp_path, "demo", "canary") == [9]
