"""What a verification reports: its record, its metrics, the RPO signal, the one notice per
target and run, and the scheduled run's result document."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from drsentry.core import observability
from drsentry.core.records import (
    BackupRecord,
    Check,
    RunNotice,
    Severity,
    VerificationRecord,
    VerifyServer,
    derive_status,
    iso,
)
from drsentry.jobs.runner import RunResult
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.verify.rules import CHECK_RESTORE, backup_time

NOTHING_TO_VERIFY = "no completed backup to verify"


def verification_record(
    target: str,
    backup: BackupRecord,
    verified: datetime,
    checks: list[Check],
    *,
    restore_seconds: float | None,
    run_error: str | None,
    server: VerifyServer | None = None,
    checks_seconds: float | None = None,
) -> VerificationRecord:
    """The log's record; a run that stopped (`run_error`) is a failure whatever its checks say."""
    age_hours = (verified - backup.started).total_seconds() / 3600
    status = "failure" if run_error else derive_status(checks)
    failed = [check for check in checks if check.status == "failed"]
    error_details = "; ".join(f"{check.name}: {check.detail}" for check in failed) or None
    return VerificationRecord(
        target=target,
        backup_id=backup.backup_id,
        verified_at=iso(verified),
        backup_age_hours=round(age_hours, 3),
        backup_size_mb=round((backup.size_bytes or 0) / 1e6, 3),
        status=status,
        checks_passed=sum(check.status == "passed" for check in checks),
        checks_failed=len(failed),
        restore_seconds=restore_seconds,
        checks=checks,
        error_details=error_details,
        server=server,
        checks_seconds=checks_seconds,
    )


def emit_metrics(record: VerificationRecord) -> None:
    target = record.target
    observability.put_metric(
        observability.VERIFICATION_SUCCESS, "Count", int(record.status == "success"), target
    )
    observability.put_metric(
        observability.VERIFICATION_WARNING, "Count", int(record.status == "warning"), target
    )
    observability.put_metric(
        observability.VERIFICATION_FAILURE, "Count", int(record.status == "failure"), target
    )
    # A backup of several databases has one `DB: restore` check per database: all must have passed.
    restores = [c for c in record.checks if c.name == CHECK_RESTORE or c.name.endswith(f": {CHECK_RESTORE}")]
    restored = bool(restores) and all(check.status == "passed" for check in restores)
    if restored and record.restore_seconds is not None:
        # Only completed restores measure the RTO; a restore that failed early is not fast.
        observability.put_metric(observability.RESTORE_SECONDS, "Seconds", record.restore_seconds, target)


def emit_rpo_signal(runtime: Runtime, target_name: str, records: list[VerificationRecord]) -> None:
    """VerifiedBackupAgeSeconds: the age of the newest *verified* backup (the RPO the config means)."""
    newest_good = next((r for r in records if r.status != "failure"), None)
    backup_id = newest_good.backup_id if newest_good else None
    if backup_id is None:
        earlier = next(
            (r for r in runtime.catalog.verifications.iter(target_name) if r.status != "failure"), None
        )
        backup_id = earlier.backup_id if earlier else None
    if backup_id is not None:
        age = (runtime.clock() - backup_time(backup_id)).total_seconds()
        observability.put_metric(
            observability.VERIFIED_BACKUP_AGE_SECONDS, "Seconds", max(age, 0.0), target_name
        )


def notice_for(
    runtime: Runtime, target_name: str, records: list[VerificationRecord]
) -> tuple[RunNotice, list[str]]:
    """One notice per target and run, so the alert state sees one outcome, not one per sample."""
    config = runtime.config
    rpo_hours = config.rpo.total_seconds() / 3600
    rto_seconds = config.rto.total_seconds()
    if not records:
        summary = f"no completed backup of {target_name} to verify"
        notice = RunNotice(
            source="verify",
            target=target_name,
            severity="critical",
            status="failure",
            summary=summary,
            run_id=runtime.run_id,
            details={"rpo_hours": rpo_hours, "rto_seconds": rto_seconds},
        )
        return notice, ["backup exists"]
    newest = records[0]
    statuses = [record.status for record in records]
    status = "failure" if "failure" in statuses else "warning" if "warning" in statuses else "success"
    severity: Severity = "critical" if status == "failure" else "warning" if status == "warning" else "info"
    failing = [check.name for check in newest.failed_checks]
    failing += [f"older backup: {check.name}" for record in records[1:] for check in record.failed_checks]
    if newest.status == "success":
        head = (
            f"backup {newest.backup_id} verified: restored in {newest.restore_seconds or 0:.1f}s "
            f"(RTO {rto_seconds:.0f}s), {newest.checks_passed} checks passed"
        )
    else:
        head = f"backup {newest.backup_id} verification {newest.status}: {newest.error_details}"
    older_failed = [r.backup_id for r in records[1:] if r.status != "success"]
    if older_failed:
        head += f"; older backup(s) not clean: {', '.join(older_failed)}"
    details = {
        "backup_id": newest.backup_id,
        "verification_id": newest.id,
        "backup_age_hours": newest.backup_age_hours,
        "rpo_hours": rpo_hours,
        "restore_seconds": newest.restore_seconds,
        "rto_seconds": rto_seconds,
        "checks_passed": newest.checks_passed,
        "checks_failed": newest.checks_failed,
        "failing_checks": sorted(set(failing)),
        "older": [{"backup_id": r.backup_id, "status": r.status} for r in records[1:]],
    }
    notice = RunNotice(
        source="verify",
        target=target_name,
        severity=severity,
        status=status,
        summary=head,
        details=details,
        run_id=runtime.run_id,
    )
    return notice, sorted(set(failing))


class VerifyRunResult(RunResult[VerificationRecord]):
    records_key: ClassVar[str] = "verifications"

    @property
    def no_backup(self) -> list[str]:
        """Targets that had no completed backup to verify (verify_target alerted on them)."""
        verified = {record.target for record in self.records}
        return [outcome.target for outcome in self.targets("ran") if outcome.target not in verified]

    def document(self) -> dict[str, Any]:
        # `unverified`, as scripts read it before: every target this run leaves without a verification.
        unverified = [{"target": o.target, "reason": o.reason} for o in self.not_run] + [
            {"target": name, "reason": NOTHING_TO_VERIFY} for name in self.no_backup
        ]
        return {**super().document(), "unverified": unverified}
