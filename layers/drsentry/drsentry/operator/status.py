"""Per-target status: newest backup and its age against the RPO, newest verification and
its restore time against the RTO, replication state. One document for `status --json`.

The RPO level is a traffic light: green while the newest completed backup is younger than
80% of the RPO, amber above that (one more missed backup breaks the RPO), red beyond the
RPO or with no backup at all.

The replica state (`replica`) is one word in the replication check's vocabulary, `ok`,
`pending` (copied soon, within max_lag), `warning` or `failure`, and the newest state wins:
the newest backup's own replica state (written by the copy after the backup, or by a check)
against the newest replication check's verdict, by their times. A check looked at every
backup of its window and at both buckets, so when it is as new or newer, its verdict is the
state; a newer backup's own state speaks only for that backup, so it can make the check's
verdict worse (its copy failed) but not clear it: the next check does."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from drsentry.core.gfs import is_archived
from drsentry.core.records import BackupRecord, iso, parse_iso
from drsentry.jobs.replication.job import latest_replication_check
from drsentry.jobs.replication.report import ReplicationReport
from drsentry.jobs.runtime import Runtime

RpoState = Literal["ok", "stale", "none"]
RpoLevel = Literal["green", "amber", "red"]
ReplicaStatus = Literal["ok", "pending", "warning", "failure"]
# Above this share of the RPO, the next missed backup breaks it: amber.
AMBER_SHARE = 0.8
# A backup's own replica state (jobs.replication.rules.ReplicaState) in the word a user reads.
BACKUP_REPLICA_STATUS: dict[str, ReplicaStatus] = {
    "ok": "ok",
    "pending": "pending",
    "failed": "failure",
    "mismatch": "failure",
    "missing": "failure",
}
_REPLICA_RANK: dict[ReplicaStatus, int] = {"ok": 0, "pending": 1, "warning": 2, "failure": 3}


class ReplicaView(BaseModel):
    """The replica state a user reads, why, and since when."""

    status: ReplicaStatus
    reason: str
    at: str
    source: Literal["backup", "replication-check"]


def newest_replica_state(backup: ReplicaView | None, check: ReplicaView | None) -> ReplicaView | None:
    """The newest state wins (see the module's docstring); None when neither says anything."""
    if backup is None or check is None:
        return backup or check
    if parse_iso(check.at) >= parse_iso(backup.at):
        return check
    return backup if _REPLICA_RANK[backup.status] >= _REPLICA_RANK[check.status] else check


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
    # One word (ok, pending, warning, failure), the newest state; None without a replica.
    replica: ReplicaStatus | None
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
    # Why `replica` says what it says, when that was found, and who found it (the newest
    # backup's copy or a replication check).
    replica_reason: str | None = None
    replica_at: str | None = None
    replica_source: Literal["backup", "replication-check"] | None = None


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
    report = latest_replication_check(runtime, target) if config.storage.replica is not None else None
    replica = _replica(newest_completed, report) if config.storage.replica is not None else None
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
        replica=replica.status if replica else None,
        replica_reason=replica.reason if replica else None,
        replica_at=replica.at if replica else None,
        replica_source=replica.source if replica else None,
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
        replication=_replication_summary(report),
        archived_backups=archived,
    )


def _replica(backup: BackupRecord | None, report: ReplicationReport | None) -> ReplicaView | None:
    own: ReplicaView | None = None
    if backup is not None and backup.replica in BACKUP_REPLICA_STATUS:
        detail = backup.replica_detail
        reason = f"newest backup {backup.backup_id}: replica {backup.replica}"
        if detail is not None and detail.error:
            reason += f": {detail.error}"
        own = ReplicaView(
            status=BACKUP_REPLICA_STATUS[backup.replica or ""],
            reason=reason,
            # The copy runs right after the backup: without a check's time, the backup's end is it.
            at=(detail.checked_at if detail else None) or backup.finished_at or backup.started_at,
            source="backup",
        )
    checked: ReplicaView | None = None
    if report is not None:
        checked = ReplicaView(
            status=report.status,
            reason="; ".join(problem.detail for problem in report.problems)
            or f"replication check: {report.checked} backup(s) checked, all {report.status}",
            at=report.checked_at,
            source="replication-check",
        )
    return newest_replica_state(own, checked)


def _replication_summary(report: ReplicationReport | None) -> dict[str, Any] | None:
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
