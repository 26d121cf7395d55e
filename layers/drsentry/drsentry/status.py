"""Per-target status: newest backup and its age against the RPO, newest verification and
its restore time against the RTO, replication state. One document for `status --json`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from drsentry.records import BackupRecord, iso
from drsentry.runtime import Runtime
from drsentry.verifications import verification_log

RpoState = Literal["ok", "stale", "none"]


class TargetStatus(BaseModel):
    target: str
    newest_backup: dict[str, Any] | None
    newest_backup_age_seconds: float | None
    rpo_seconds: float
    rpo_state: RpoState
    last_backup_status: str | None
    last_backup_error: str | None
    newest_verification: dict[str, Any] | None
    rto_seconds: float
    rto_state: Literal["ok", "slow", "none"]
    replica: str | None
    completed_backups: int
    failed_backups: int


class StatusReport(BaseModel):
    generated_at: str
    targets: list[TargetStatus]

    @property
    def healthy(self) -> bool:
        return all(t.rpo_state == "ok" for t in self.targets)


def _backup_summary(record: BackupRecord) -> dict[str, Any]:
    return {
        "backup_id": record.backup_id,
        "started_at": record.started_at,
        "size_bytes": record.size_bytes,
        "tier": record.tier,
        "duration_seconds": record.duration_seconds,
        "key": record.key,
    }


def target_status(runtime: Runtime, target: str, now: datetime) -> TargetStatus:
    config = runtime.config
    rpo = config.rpo.total_seconds()
    rto = config.rto.total_seconds()
    newest_completed: BackupRecord | None = None
    last: BackupRecord | None = None
    completed = failed = 0
    for record in runtime.catalog.iter_backups(target):
        last = last or record
        if record.status == "completed":
            completed += 1
            newest_completed = newest_completed or record
        else:
            failed += 1
    age = (now - newest_completed.started).total_seconds() if newest_completed else None
    verification = _newest_verification(runtime, target)
    restore_seconds = verification.get("restore_seconds") if verification else None
    rto_state: Literal["ok", "slow", "none"] = "none"
    if restore_seconds is not None:
        rto_state = "ok" if float(restore_seconds) <= rto else "slow"
    return TargetStatus(
        target=target,
        newest_backup=_backup_summary(newest_completed) if newest_completed else None,
        newest_backup_age_seconds=round(age, 1) if age is not None else None,
        rpo_seconds=rpo,
        rpo_state="none" if age is None else ("ok" if age <= rpo else "stale"),
        last_backup_status=last.status if last else None,
        last_backup_error=last.error if last else None,
        newest_verification=verification,
        rto_seconds=rto,
        rto_state=rto_state,
        replica=newest_completed.replica if newest_completed else None,
        completed_backups=completed,
        failed_backups=failed,
    )


def _newest_verification(runtime: Runtime, target: str) -> dict[str, Any] | None:
    record = verification_log(runtime).latest(target)
    return record.model_dump() if record is not None else None


def status_report(runtime: Runtime, target: str | None = None) -> StatusReport:
    now = runtime.clock()
    targets = runtime.config.selected_targets(target)
    return StatusReport(generated_at=iso(now), targets=[target_status(runtime, t.name, now) for t in targets])
