"""Per-target status: newest backup and its age against the RPO, newest verification and
its restore time against the RTO, replication state. One document for `status --json`.

The RPO level is a traffic light: green while the newest completed backup is younger than
80% of the RPO, amber above that (one more missed backup breaks the RPO), red beyond the
RPO or with no backup at all."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from drsentry.core.gfs import is_archived
from drsentry.core.records import BackupRecord, iso
from drsentry.jobs.replication.job import latest_replication_check
from drsentry.jobs.runtime import Runtime

RpoState = Literal["ok", "stale", "none"]
RpoLevel = Literal["green", "amber", "red"]
# Above this share of the RPO, the next missed backup breaks it: amber.
AMBER_SHARE = 0.8


def rpo_level(age_seconds: float | None, rpo_seconds: float) -> RpoLevel:
    if age_seconds is None or age_seconds > rpo_seconds:
        return "red"
    return "amber" if age_seconds > rpo_seconds * AMBER_SHARE else "green"


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
    rpo_level: RpoLevel = "red"
    # The newest backup's age as a share of the RPO (1.0 = exactly at the RPO).
    rpo_used: float | None = None
    verification_status: str | None = None
    failing_checks: list[str] = Field(default_factory=list)
    # The newest replication check: status, when, lag and counts; None when never checked.
    replication: dict[str, Any] | None = None
    archived_backups: int = 0


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
    completed = failed = archived = 0
    for record in runtime.catalog.iter_backups(target):
        if is_archived(record):
            archived += 1
        if record.status == "expired":
            continue  # retention removed it on purpose: neither a backup to count nor a failed run
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
        rpo_level=rpo_level(age, rpo),
        rpo_used=round(age / rpo, 3) if age is not None and rpo else None,
        verification_status=verification.get("status") if verification else None,
        failing_checks=[
            str(check["name"])
            for check in (verification or {}).get("checks", [])
            if check["status"] == "failed"
        ],
        replication=_replication_summary(runtime, target),
        archived_backups=archived,
    )


def _replication_summary(runtime: Runtime, target: str) -> dict[str, Any] | None:
    if runtime.config.storage.replica is None:
        return None
    report = latest_replication_check(runtime, target)
    if report is None:
        return None
    return {
        "status": report.status,
        "checked_at": report.checked_at,
        "mode": report.mode,
        "replica_bucket": report.replica_bucket,
        "replica_region": report.replica_region,
        "lag_seconds": report.lag_seconds,
        "counts": report.counts,
        "problems": [problem.detail for problem in report.problems],
    }


def _newest_verification(runtime: Runtime, target: str) -> dict[str, Any] | None:
    record = runtime.catalog.verifications.latest(target)
    return record.model_dump() if record is not None else None


def status_report(runtime: Runtime, target: str | None = None) -> StatusReport:
    now = runtime.clock()
    targets = runtime.config.selected_targets(target)
    return StatusReport(generated_at=iso(now), targets=[target_status(runtime, t.name, now) for t in targets])
