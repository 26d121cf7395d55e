"""A disaster-recovery drill: a fresh backup, restored into a scratch database and verified,
measured against the RPO and RTO.

`run_drill` runs the same code as the scheduled functions (`backup_target`, then
`verify_backup` on the backup it just took), so the drill proves what production does,
and returns a `DrillReport` that `drill_report` renders as Markdown or HTML.

Measured, as a drill defines them:
- RTO: the verification's restore time (download, decompress, pg_restore) of the fresh
  backup: how long getting the data back takes today;
- RPO: the age of the newest completed backup when the drill started: the data a
  disaster at that moment would have lost.
The drill FAILS when the backup fails, the verification fails, or either target is missed.

With ``smoke``, the target's smoke checks run once the verification's checks are done and
before its scratch database is dropped (SQL checks go to that restored database); a failed
smoke check, or smoke checks that could not run because the restore failed, FAIL the drill.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, Field

from drsentry.core.errors import BadInput
from drsentry.core.records import Check, VerificationRecord, iso
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.verify.job import verify_backup
from drsentry.operator.smoke import SmokeResult, run_smoke_checks, smoke_failures

HISTORY_SIZE = 30
# The seeds' cadence: a drill every quarter.
NEXT_DRILL_AFTER = timedelta(days=91)

DrillStatus = Literal["PASS", "FAIL"]


class HistoryPoint(BaseModel):
    verified_at: str
    backup_id: str
    status: str
    restore_seconds: float | None
    backup_size_mb: float | None


class DrillReport(BaseModel):
    target: str
    status: DrillStatus
    started_at: str
    finished_at: str
    total_seconds: float
    backup_id: str | None = None
    backup_status: str | None = None
    backup_seconds: float | None = None
    backup_size_bytes: int | None = None
    verification_id: str | None = None
    verification_status: str | None = None
    verify_seconds: float | None = None
    restore_seconds: float | None = None
    checks_passed: int = 0
    checks_total: int = 0
    checks_skipped: int = 0
    checks: list[Check] = Field(default_factory=list)
    issues: list[str] = Field(default_factory=list)
    rto_target_seconds: float
    rto_measured_seconds: float | None = None
    rto_met: bool | None = None
    rpo_target_seconds: float
    rpo_measured_seconds: float | None = None
    rpo_met: bool | None = None
    rpo_basis: str = ""
    history: list[HistoryPoint] = Field(default_factory=list)
    next_drill_by: str = ""
    # None: the drill ran without --smoke; an empty list: requested, but the restore never completed.
    smoke: list[SmokeResult] | None = None


def drill_status(
    backup_status: str | None, verification_status: str | None, rto_met: bool | None, rpo_met: bool | None
) -> DrillStatus:
    """PASS only when the backup completed, its verification did not fail and no target was missed."""
    if backup_status != "completed" or verification_status in {None, "failure"}:
        return "FAIL"
    return "FAIL" if rto_met is False or rpo_met is False else "PASS"


def drill_issues(report: DrillReport, verification: VerificationRecord | None) -> list[str]:
    issues: list[str] = []
    if report.backup_status != "completed":
        issues.append(
            f"backup {report.backup_id or ''} failed: {report.backup_status or 'did not run'}".strip()
        )
    if verification is not None:
        for check in verification.failed_checks:
            issues.append(f"{check.severity} check failed: {check.name}: {check.detail}")
    if report.rto_met is False and report.rto_measured_seconds is not None:
        issues.append(
            f"RTO missed: the restore took {report.rto_measured_seconds:.1f}s, "
            f"the target is {report.rto_target_seconds:.0f}s"
        )
    if report.rpo_met is False and report.rpo_measured_seconds is not None:
        issues.append(
            f"RPO missed: {report.rpo_basis} was {report.rpo_measured_seconds / 60:.0f} min old, "
            f"the target is {report.rpo_target_seconds / 60:.0f} min"
        )
    return issues


def history(runtime: Runtime, target: str, size: int = HISTORY_SIZE) -> list[HistoryPoint]:
    """The target's last `size` verifications, oldest first (as a chart reads)."""
    points: list[HistoryPoint] = []
    for record in runtime.catalog.verifications.iter(target):
        points.append(
            HistoryPoint(
                verified_at=record.verified_at,
                backup_id=record.backup_id,
                status=record.status,
                restore_seconds=record.restore_seconds,
                backup_size_mb=record.backup_size_mb,
            )
        )
        if len(points) >= size:
            break
    return list(reversed(points))


def run_drill(
    runtime: Runtime,
    target_name: str,
    on_phase: Callable[[str], None] | None = None,
    *,
    smoke: bool = False,
) -> DrillReport:
    """Back up, restore into scratch, verify, measure (and run the smoke checks). Never raises
    for what it finds."""
    phase = on_phase or (lambda _text: None)
    config = runtime.config
    target = config.target(target_name)
    if target.verify is None:
        raise BadInput(f"target {target_name!r} has no verify section: a drill needs a scratch server")
    if smoke and not target.smoke:
        raise BadInput(f"--smoke: target {target_name!r} has no smoke checks configured (targets[].smoke)")
    smoke_results: list[SmokeResult] = []

    def run_smoke(restored_dsn: str) -> None:
        phase(f"running {len(target.smoke)} smoke check(s)")
        smoke_results.extend(run_smoke_checks(target.smoke, restored_dsn))

    started_at = runtime.clock()
    started = time.monotonic()
    previous = runtime.catalog.latest_completed(target_name)

    phase(f"backing up {target_name}")
    backup_started = time.monotonic()
    backup = backup_target(runtime, target_name)
    backup_seconds = time.monotonic() - backup_started

    verification: VerificationRecord | None = None
    verify_seconds: float | None = None
    if backup.status == "completed":
        phase(f"restoring {backup.backup_id} into scratch and verifying")
        verify_started = time.monotonic()
        verification = verify_backup(runtime, target_name, backup, after_restore=run_smoke if smoke else None)
        verify_seconds = time.monotonic() - verify_started

    rto = config.rto.total_seconds()
    rpo = config.rpo.total_seconds()
    restore_seconds = verification.restore_seconds if verification else None
    restored = verification is not None and any(
        check.name == "restore" and check.status == "passed" for check in verification.checks
    )
    if previous is not None:
        rpo_measured: float | None = max((started_at - previous.started).total_seconds(), 0.0)
        rpo_basis = f"the newest backup before the drill ({previous.backup_id})"
    else:
        rpo_measured = None
        rpo_basis = "no completed backup existed before the drill"
    finished_at = runtime.clock()
    report = DrillReport(
        target=target_name,
        status="FAIL",
        started_at=iso(started_at),
        finished_at=iso(finished_at),
        total_seconds=round(time.monotonic() - started, 3),
        backup_id=backup.backup_id,
        backup_status=backup.status,
        backup_seconds=round(backup.duration_seconds or backup_seconds, 3),
        backup_size_bytes=backup.size_bytes,
        verification_id=verification.id if verification else None,
        verification_status=verification.status if verification else None,
        verify_seconds=round(verify_seconds, 3) if verify_seconds is not None else None,
        restore_seconds=restore_seconds,
        checks_passed=verification.checks_passed if verification else 0,
        checks_total=(verification.checks_passed + verification.checks_failed) if verification else 0,
        checks_skipped=sum(check.status == "skipped" for check in verification.checks) if verification else 0,
        checks=list(verification.checks) if verification else [],
        rto_target_seconds=rto,
        # A restore that failed early is not fast: only a completed one measures the RTO.
        rto_measured_seconds=restore_seconds if restored else None,
        rto_met=(restore_seconds <= rto) if restored and restore_seconds is not None else None,
        rpo_target_seconds=rpo,
        rpo_measured_seconds=round(rpo_measured, 1) if rpo_measured is not None else None,
        rpo_met=(rpo_measured <= rpo) if rpo_measured is not None else None,
        rpo_basis=rpo_basis,
        history=history(runtime, target_name),
        next_drill_by=(finished_at + NEXT_DRILL_AFTER).date().isoformat(),
        smoke=smoke_results if smoke else None,
    )
    if backup.status != "completed":
        report.backup_status = backup.status
        report.issues = [f"backup {backup.backup_id} failed: {backup.error}"]
    else:
        report.issues = drill_issues(report, verification)
    if previous is None:
        report.issues.append("RPO not measured: no completed backup existed before the drill")
    if smoke:
        report.issues += smoke_issues(smoke_results)
    report.status = drill_status(
        report.backup_status, report.verification_status, report.rto_met, report.rpo_met
    )
    if smoke and (not smoke_results or smoke_failures(smoke_results)):
        report.status = "FAIL"
    return report


def smoke_issues(results: list[SmokeResult]) -> list[str]:
    if not results:
        return ["smoke checks not run: the restore did not complete"]
    return [f"smoke check failed: {result.name}: {result.detail}" for result in smoke_failures(results)]
