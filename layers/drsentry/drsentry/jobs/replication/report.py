"""The result of one replication check (``ReplicationReport``): the judged backups grouped
by state, the problems an operator reads, the lag; its notice and its metrics."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from drsentry.core import observability
from drsentry.core.config import ReplicaConfig
from drsentry.core.records import RunNotice, Severity
from drsentry.core.units import human_seconds
from drsentry.jobs.replication.rules import (
    CheckStatus,
    Problem,
    ProblemSeverity,
    ReplicationMode,
    Verdict,
)

# The stored record, the idempotency record and the alert must stay far below DynamoDB's
# 400 KB item limit even when thousands of replicas are missing; counts stay exact.
MAX_LISTED = 100
NOTICE_SEVERITY: dict[CheckStatus, Severity] = {"failure": "critical", "warning": "warning", "ok": "info"}


@dataclass(frozen=True)
class BackupCheck:
    backup_id: str
    verdict: Verdict | None  # None: could not be checked
    error: str | None
    age_seconds: float


class ReplicationReport(BaseModel):
    """One replication check of one target: what is stored, returned and alerted on."""

    model_config = ConfigDict(extra="ignore")

    target: str
    checked_at: str
    run_id: str
    status: CheckStatus
    mode: ReplicationMode
    primary_bucket: str
    replica_bucket: str
    replica_region: str
    window_start: str
    checked: int = 0
    # Exact numbers per state (ok, pending, missing, mismatched, failed, unchecked) ...
    counts: dict[str, int] = Field(default_factory=dict)
    # ... and the backup ids, newest first, at most MAX_LISTED each.
    missing: list[str] = Field(default_factory=list)
    mismatched: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    unchecked: list[str] = Field(default_factory=list)
    lag_seconds: float = 0.0
    oldest_unreplicated: str | None = None
    problems: list[Problem] = Field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def failing_checks(self) -> list[str]:
        return sorted({problem.check for problem in self.problems})


def listed_ids(checks: list[BackupCheck]) -> list[str]:
    return [check.backup_id for check in checks[:MAX_LISTED]]


def _listing(checks: list[BackupCheck]) -> str:
    shown = ", ".join(check.backup_id for check in checks[:3])
    more = len(checks) - 3
    return f"{shown} and {more} more" if more > 0 else shown


def summarize(
    checks: list[BackupCheck], bucket_problems: list[Problem], replica: ReplicaConfig
) -> tuple[dict[str, list[BackupCheck]], list[Problem], float, str | None]:
    """Group the per-backup results; the problems an operator reads; the lag and its backup."""
    groups: dict[str, list[BackupCheck]] = {
        name: [] for name in ("ok", "pending", "missing", "mismatched", "failed", "unchecked")
    }
    state_group = {"ok": "ok", "pending": "pending", "missing": "missing", "mismatch": "mismatched"}
    for check in checks:
        if check.verdict is None:
            groups["unchecked"].append(check)
        else:
            groups[state_group.get(check.verdict.state, "failed")].append(check)
    where = f"s3://{replica.bucket} ({replica.region})"
    problems = list(bucket_problems)
    for group, name, wording in (
        ("missing", "replica-missing", f"backup(s) have no replica in {where}"),
        ("mismatched", "replica-mismatch", f"replica(s) in {where} differ from the backup"),
        ("failed", "replication-failed", "backup(s) whose S3 replication FAILED"),
    ):
        found = groups[group]
        if found:
            first = found[0].verdict
            reason = f" (newest: {first.reason})" if first is not None else ""
            problems.append(
                Problem(
                    check=name,
                    severity="critical",
                    detail=f"{len(found)} {wording}: {_listing(found)}{reason}",
                )
            )
    severities: tuple[ProblemSeverity, ...] = ("critical", "warning")
    for severity in severities:
        late = [c for c in groups["pending"] if c.verdict is not None and c.verdict.judgement == severity]
        if late:
            oldest = max(late, key=lambda check: check.age_seconds)
            problems.append(
                Problem(
                    check="replication-lag",
                    severity=severity,
                    detail=(
                        f"{len(late)} backup(s) still not replicated after more than "
                        f"{'twice ' if severity == 'critical' else ''}max_lag "
                        f"({human_seconds(replica.max_lag.total_seconds())}); oldest "
                        f"{oldest.backup_id}, {human_seconds(oldest.age_seconds)}"
                    ),
                )
            )
    if groups["unchecked"]:
        unchecked = groups["unchecked"]
        problems.append(
            Problem(
                check="replica-unchecked",
                severity="critical",
                detail=f"{len(unchecked)} backup(s) could not be checked: {unchecked[0].error}",
            )
        )
    unsafe = [c for c in checks if c.verdict is not None and c.verdict.state != "ok"]
    oldest_unsafe = max(unsafe, key=lambda check: check.age_seconds, default=None)
    lag = round(oldest_unsafe.age_seconds, 1) if oldest_unsafe else 0.0
    return groups, problems, lag, oldest_unsafe.backup_id if oldest_unsafe else None


def emit_metrics(report: ReplicationReport) -> None:
    target = report.target
    counts = report.counts
    observability.put_metric(
        observability.REPLICA_MISSING, "Count", counts.get("missing", 0) + counts.get("failed", 0), target
    )
    observability.put_metric(observability.REPLICA_MISMATCH, "Count", counts.get("mismatched", 0), target)
    observability.put_metric(observability.REPLICATION_LAG_SECONDS, "Seconds", report.lag_seconds, target)


def notice_for(report: ReplicationReport) -> RunNotice:
    severity = NOTICE_SEVERITY[report.status]
    counts = report.counts
    where = f"s3://{report.replica_bucket} ({report.replica_region})"
    if report.status == "ok":
        summary = f"replication of {report.target}: {report.checked} backup(s) checked in {where}, all safe"
        if counts.get("pending"):
            summary += f" ({counts['pending']} still being copied, within max_lag)"
    else:
        summary = (
            f"replication of {report.target} ({report.status}): {report.checked} checked, "
            f"{counts.get('missing', 0)} missing, {counts.get('mismatched', 0)} mismatched, "
            f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending; "
            f"lag {human_seconds(report.lag_seconds)}"
        )
    return RunNotice(
        source="replication-check",
        target=report.target,
        severity=severity,
        status=report.status,
        summary=summary,
        details={
            "mode": report.mode,
            "replica": where,
            "window_start": report.window_start,
            "checked": report.checked,
            "counts": counts,
            "missing": report.missing[:20],
            "mismatched": report.mismatched[:20],
            "failed": report.failed[:20],
            "lag_seconds": report.lag_seconds,
            "oldest_unreplicated": report.oldest_unreplicated,
            "problems": [problem.model_dump() for problem in report.problems],
        },
        run_id=report.run_id,
    )
