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

The report also carries what an operator's drill template asks for beyond the numbers: the
run's context for an auditor (`RunContext`) and recommendations derived from what was
measured (`drill_recommendations`), with the thresholds named below.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from drsentry.core.config import TargetConfig
from drsentry.core.errors import BadInput, CredentialsError
from drsentry.core.records import BackupRecord, Check, VerificationRecord, iso
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.verify.job import verify_backup
from drsentry.operator.provenance import config_digest, database_location, drsentry_version, operator_identity
from drsentry.operator.smoke import SmokeResult, run_smoke_checks, smoke_failures

HISTORY_SIZE = 30
# The seeds' cadence: a drill every quarter.
NEXT_DRILL_AFTER = timedelta(days=91)
# Above this share of its objective a measured restore time or backup age leaves no margin for
# growth or a slow day: the share at which `status` turns the RPO amber.
NEAR_OBJECTIVE = 0.8
# The drill's backup this much larger or smaller than the median of the earlier verified ones:
# data grew or went away faster than capacity plans and restore times assume. Day-to-day churn
# of a production database stays well within it; a dropped table or a bulk import does not.
SIZE_DRIFT = 0.2

DrillStatus = Literal["PASS", "FAIL"]


class HistoryPoint(BaseModel):
    verified_at: str
    backup_id: str
    status: str
    restore_seconds: float | None
    backup_size_mb: float | None


class RunContext(BaseModel):
    """What an auditor asks of a drill: which database, which drsentry, who, which settings."""

    source: str
    drsentry_version: str
    ran_by: str
    config_digest: str


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
    recommendations: list[str] = Field(default_factory=list)
    context: RunContext | None = None


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
    config_file: Path | None = None,
) -> DrillReport:
    """Back up, restore into scratch, verify, measure (and run the smoke checks). Never raises
    for what it finds. `config_file`: the configuration's file, whose digest the report carries."""
    phase = on_phase or (lambda _text: None)
    target = _drillable(runtime.config.target(target_name), smoke=smoke)
    smoke_results: list[SmokeResult] = []

    def run_smoke(restored_dsn: str) -> None:
        phase(f"running {len(target.smoke)} smoke check(s)")
        smoke_results.extend(run_smoke_checks(target.smoke, restored_dsn))

    started_at = runtime.clock()
    started = time.monotonic()
    run = _back_up_and_verify(runtime, target_name, phase, after_restore=run_smoke if smoke else None)
    finished_at = runtime.clock()
    report = _measured_report(
        runtime,
        target,
        run,
        started_at=started_at,
        finished_at=finished_at,
        total_seconds=round(time.monotonic() - started, 3),
        smoke=smoke_results if smoke else None,
        config_file=config_file,
    )
    _judge(report, run)
    return report


def _drillable(target: TargetConfig, *, smoke: bool) -> TargetConfig:
    """The target, when it can be drilled as asked; BadInput naming what its config lacks."""
    if target.verify is None:
        raise BadInput(f"target {target.name!r} has no verify section: a drill needs a scratch server")
    if smoke and not target.smoke:
        raise BadInput(f"--smoke: target {target.name!r} has no smoke checks configured (targets[].smoke)")
    return target


@dataclass(frozen=True)
class _DrillRun:
    """What the drill did: the backup it took and the verification of that backup."""

    previous: BackupRecord | None  # the newest completed backup before the drill: the RPO's basis
    backup: BackupRecord
    backup_seconds: float
    verification: VerificationRecord | None  # None when the backup failed
    verify_seconds: float | None

    def restored(self) -> bool:
        return self.verification is not None and any(
            check.name == "restore" and check.status == "passed" for check in self.verification.checks
        )


def _back_up_and_verify(
    runtime: Runtime,
    target_name: str,
    phase: Callable[[str], None],
    *,
    after_restore: Callable[[str], None] | None,
) -> _DrillRun:
    """The same code as the scheduled functions: `backup_target`, then `verify_backup` on that backup."""
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
        verification = verify_backup(runtime, target_name, backup, after_restore=after_restore)
        verify_seconds = time.monotonic() - verify_started
    return _DrillRun(previous, backup, backup_seconds, verification, verify_seconds)


def _measured_report(
    runtime: Runtime,
    target: TargetConfig,
    run: _DrillRun,
    *,
    started_at: datetime,
    finished_at: datetime,
    total_seconds: float,
    smoke: list[SmokeResult] | None,
    config_file: Path | None,
) -> DrillReport:
    """What the drill measured, against the RPO and RTO; its status and issues are judged after."""
    config = runtime.config
    backup, verification = run.backup, run.verification
    rto = config.rto.total_seconds()
    rpo = config.rpo.total_seconds()
    restore_seconds = verification.restore_seconds if verification else None
    restored = run.restored()
    if run.previous is not None:
        rpo_measured: float | None = max((started_at - run.previous.started).total_seconds(), 0.0)
        rpo_basis = f"the newest backup before the drill ({run.previous.backup_id})"
    else:
        rpo_measured = None
        rpo_basis = "no completed backup existed before the drill"
    return DrillReport(
        target=target.name,
        status="FAIL",
        started_at=iso(started_at),
        finished_at=iso(finished_at),
        total_seconds=total_seconds,
        backup_id=backup.backup_id,
        backup_status=backup.status,
        backup_seconds=round(backup.duration_seconds or run.backup_seconds, 3),
        backup_size_bytes=backup.size_bytes,
        verification_id=verification.id if verification else None,
        verification_status=verification.status if verification else None,
        verify_seconds=round(run.verify_seconds, 3) if run.verify_seconds is not None else None,
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
        history=history(runtime, target.name),
        next_drill_by=(finished_at + NEXT_DRILL_AFTER).date().isoformat(),
        smoke=smoke,
        context=RunContext(
            source=drill_source(runtime, target),
            drsentry_version=drsentry_version(),
            ran_by=operator_identity(),
            config_digest=config_digest(config, config_file),
        ),
    )


def _judge(report: DrillReport, run: _DrillRun) -> None:
    """The report's issues, PASS or FAIL, and recommendations, from what it measured."""
    backup = run.backup
    if backup.status != "completed":
        report.backup_status = backup.status
        report.issues = [f"backup {backup.backup_id} failed: {backup.error}"]
    else:
        report.issues = drill_issues(report, run.verification)
    if run.previous is None:
        report.issues.append("RPO not measured: no completed backup existed before the drill")
    if report.smoke is not None:
        report.issues += smoke_issues(report.smoke)
    report.status = drill_status(
        report.backup_status, report.verification_status, report.rto_met, report.rpo_met
    )
    if report.smoke is not None and (not report.smoke or smoke_failures(report.smoke)):
        report.status = "FAIL"
    report.recommendations = drill_recommendations(report)


def drill_source(runtime: Runtime, target: TargetConfig) -> str:
    """`host:port/db` of the drilled database (and the secret that names it)."""
    try:
        location = database_location(runtime.credentials.target_dsn(target))
    except CredentialsError as exc:  # the backup failed on it too; the report says which secret
        location = f"unknown ({exc})"
    return f"{location} (secret {target.dsn_secret})" if target.dsn_secret else location


def smoke_issues(results: list[SmokeResult]) -> list[str]:
    if not results:
        return ["smoke checks not run: the restore did not complete"]
    return [f"smoke check failed: {result.name}: {result.detail}" for result in smoke_failures(results)]


def format_seconds(seconds: float | None) -> str:
    """`0.8 s`, `42.0 s`, `3 min 20 s`, `1 h`, `2 h 5 min`: what a person reads at a glance."""
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, rest = divmod(round(seconds / 60), 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _share(measured: float | None, target: float) -> float | None:
    return measured / target if measured is not None and target > 0 else None


def drill_recommendations(report: DrillReport) -> list[str]:
    """What to do next, derived from what the drill measured: the failures first, then what held
    with too little margin (NEAR_OBJECTIVE), warning checks and a backup size that drifted from
    the earlier ones (SIZE_DRIFT). Empty when every objective held with margin."""
    advice: list[str] = []
    if report.backup_status != "completed":
        advice.append(
            "Fix the backup first (see the issue above) and rerun the drill: "
            "nothing after it could be measured."
        )
    critical = [check for check in report.checks if check.status == "failed" and check.severity == "critical"]
    if critical:
        names = ", ".join(check.name for check in critical)
        advice.append(
            f"Critical check(s) failed ({names}): this backup would not give the application its data "
            "back; fix the cause and rerun the drill before relying on backups of this target."
        )
    restore_share = _share(report.rto_measured_seconds, report.rto_target_seconds)
    rto, restore = format_seconds(report.rto_target_seconds), format_seconds(report.rto_measured_seconds)
    if restore_share is not None and restore_share > 1:
        advice.append(
            f"The restore took {restore}, over the RTO of {rto}: restore with more parallel jobs or "
            "on a larger server, or agree a longer RTO with the business."
        )
    elif restore_share is not None and restore_share >= NEAR_OBJECTIVE:
        advice.append(
            f"The restore took {restore}, {restore_share:.0%} of the RTO of {rto}: the database's growth "
            "will break it; plan a faster restore (more parallel jobs, a larger server) now."
        )
    age_share = _share(report.rpo_measured_seconds, report.rpo_target_seconds)
    rpo, age = format_seconds(report.rpo_target_seconds), format_seconds(report.rpo_measured_seconds)
    if age_share is not None and age_share > 1:
        advice.append(
            f"The newest backup was {age} old when the drill began, over the RPO of {rpo}: find why "
            "scheduled backups did not run, or schedule them more often."
        )
    elif age_share is not None and age_share >= NEAR_OBJECTIVE:
        advice.append(
            f"The newest backup was {age} old when the drill began, {age_share:.0%} of the RPO of {rpo}: "
            "one late backup breaks it; schedule backups at least twice per RPO."
        )
    for check in report.checks:
        if check.status == "failed" and check.severity == "warning":
            advice.append(
                f"Warning check '{check.name}' failed ({check.detail}): confirm it is expected, "
                "or fix it before it hides a real loss."
            )
    if report.smoke is not None and not report.smoke:
        advice.append("The smoke checks did not run: the restore did not complete. Fix the restore first.")
    for result in smoke_failures(report.smoke or []):
        advice.append(
            f"Smoke check '{result.name}' failed on the restored copy ({result.detail}): the data came "
            "back but the application would not work with it; fix this before relying on the backup."
        )
    drift = size_drift(report)
    if drift is not None:
        change, median_mb, earlier = drift
        direction = "larger" if change > 0 else "smaller"
        advice.append(
            f"The backup is {abs(change):.0%} {direction} than the median of the {earlier} earlier "
            f"verified backup(s) ({median_mb:,.1f} MB): confirm the "
            f"{'growth' if change > 0 else 'shrinkage'} is expected (a sudden drop can be lost data), "
            "and recheck the restore time against the RTO."
        )
    return advice


def size_drift(report: DrillReport) -> tuple[float, float, int] | None:
    """(relative change, median MB, earlier backups) when the drill's backup differs from the
    median of the earlier verified backups by more than SIZE_DRIFT; None otherwise."""
    if report.backup_size_bytes is None or report.backup_status != "completed":
        return None
    earlier = [
        point.backup_size_mb
        for point in report.history
        if point.backup_id != report.backup_id and point.backup_size_mb
    ]
    if not earlier:
        return None
    median_mb = statistics.median(earlier)
    change = report.backup_size_bytes / 1e6 / median_mb - 1
    return (change, median_mb, len(earlier)) if abs(change) > SIZE_DRIFT else None
