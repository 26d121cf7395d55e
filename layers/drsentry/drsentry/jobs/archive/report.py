"""What an archive run reports: one row per retention decision and what came of it, the
per-target report (the run's result, also its idempotency record), and its run notice."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from drsentry.core import gfs
from drsentry.core.gfs import RetentionDecision
from drsentry.core.records import RunNotice
from drsentry.jobs.archive.purge import HiddenBackup, PurgeOutcome
from drsentry.jobs.backup.unrecorded import UnrecordedBackup

# A real run's result is also the idempotency record (one DynamoDB item, 400 KB at most),
# so it lists at most this many rows: the changes first, then kept backups while room is left.
MAX_RESULT_ROWS = 500
# The same bound for the unrecorded dumps listed; `unrecorded_count` has them all.
MAX_UNRECORDED_LISTED = 100

# locked: due to expire, but its primary copy is under Object Lock until a later date (not a failure).
Outcome = Literal["planned", "done", "failed", "refused", "deferred", "locked"]


class DecisionRow(BaseModel):
    """One line of the plan table: what retention decided for a backup, and what came of it."""

    backup_id: str
    started_at: str
    action: gfs.Action
    slots: list[str] = Field(default_factory=list)
    reason: str = ""
    # None for `keep`; `planned` in a dry run.
    outcome: Outcome | None = None
    detail: str | None = None
    # Set when this run extended the primary copy's Object Lock to a longer slot's end.
    retain_until: str | None = None

    @classmethod
    def of(cls, decision: RetentionDecision) -> DecisionRow:
        return cls(
            backup_id=decision.backup_id,
            started_at=decision.started_at,
            action=decision.action,
            slots=list(decision.slots),
            reason=decision.reason,
        )


class TargetArchiveReport(BaseModel):
    target: str
    dry_run: bool
    planned_at: str
    # keep / archive / expire / ignored (failed and already expired records)
    counts: dict[str, int] = Field(default_factory=dict)
    # filled slots per tier: hourly / daily / weekly / monthly
    slots: dict[str, int] = Field(default_factory=dict)
    archived: int = 0
    expired: int = 0
    failed: int = 0
    refused: int = 0
    deferred: int = 0
    # due to expire but still under Object Lock; primary copies expired (archive copy kept);
    # primary copies whose lock was extended to a longer slot's end
    locked: int = 0
    primary_expired: int = 0
    extended: int = 0
    # Newest first: every change (archive, expire) and, space permitting, the kept backups.
    decisions: list[DecisionRow] = Field(default_factory=list)
    decisions_omitted: int = 0
    # Dumps in the bucket no completed record shows (jobs/backup/unrecorded.py): retention
    # cannot see them, so the run says so, as a warning, every time until someone acts.
    unrecorded: list[UnrecordedBackup] = Field(default_factory=list)
    unrecorded_count: int = 0
    # Withdrawn backups of failed runs deleted for good, those left under Object Lock, purges that
    # failed; completed backups a delete marker hides (jobs/archive/purge.py): never deleted, a warning.
    purged: int = 0
    purge_locked: int = 0
    purge_problems: list[str] = Field(default_factory=list)
    hidden_completed: list[HiddenBackup] = Field(default_factory=list)

    def add_purge(self, outcome: PurgeOutcome) -> None:
        self.purged, self.purge_locked = outcome.purged, outcome.locked
        self.purge_problems = outcome.problems[:MAX_UNRECORDED_LISTED]
        self.hidden_completed = outcome.hidden_completed[:MAX_UNRECORDED_LISTED]

    def list_unrecorded(self, found: list[UnrecordedBackup]) -> None:
        self.unrecorded, self.unrecorded_count = found[:MAX_UNRECORDED_LISTED], len(found)

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.refused == 0 and not self.purge_problems

    def summary(self) -> str:
        counts = self.counts
        planned = (
            f"keep {counts.get('keep', 0)}, archive {counts.get('archive', 0)}, "
            f"expire {counts.get('expire', 0)}"
        )
        if self.dry_run:
            return f"dry run for {self.target}: {planned}; nothing changed"
        done = f"archived {self.archived}, expired {self.expired}"
        if self.primary_expired:
            done += f", primary copy expired {self.primary_expired}"
        if self.extended:
            done += f", lock extended {self.extended}"
        if self.purged:
            done += f", withdrawn failed backups purged {self.purged}"
        problems = [
            f"{count} {label}"
            for count, label in (
                (self.failed, "failed"),
                (self.refused, "refused by Object Lock"),
                (self.deferred, "left for the next run"),
                (self.locked, "still under Object Lock"),
                (len(self.purge_problems), "purge(s) of withdrawn backups failed"),
                (self.purge_locked, "withdrawn backup(s) left under Object Lock"),
                (len(self.hidden_completed), "completed backup(s) hidden by a delete marker"),
            )
            if count
        ]
        if self.unrecorded_count:
            problems.append(f"{self.unrecorded_count} unrecorded backup(s) in the bucket")
        return f"{self.target}: {planned}: {done}" + (f"; {', '.join(problems)}" if problems else "")

    def count_outcomes(self, rows: list[DecisionRow]) -> None:
        """The totals of what was done, from the rows the run filled in."""
        outcomes = [(row.action, row.outcome) for row in rows]
        self.archived = outcomes.count(("archive", "done"))
        self.expired = outcomes.count(("expire", "done"))
        self.failed = sum(outcome == "failed" for _, outcome in outcomes)
        self.refused = sum(outcome == "refused" for _, outcome in outcomes)
        self.deferred = sum(outcome == "deferred" for _, outcome in outcomes)
        self.locked = sum(outcome == "locked" for _, outcome in outcomes)
        self.primary_expired = outcomes.count(("expire_primary", "done"))
        self.extended = sum(row.retain_until is not None for row in rows)
        self.decisions, self.decisions_omitted = result_rows(rows, self.dry_run)


def result_rows(rows: list[DecisionRow], dry_run: bool) -> tuple[list[DecisionRow], int]:
    """Every row for a dry run; for a real run every change and as many kept rows as fit."""
    if dry_run or len(rows) <= MAX_RESULT_ROWS:
        return rows, 0
    changes = [row for row in rows if row.action != "keep"]
    room = max(MAX_RESULT_ROWS - len(changes), 0)
    kept = [row for row in rows if row.action == "keep"][:room]
    chosen = {row.backup_id for row in changes[:MAX_RESULT_ROWS] + kept}
    shown = [row for row in rows if row.backup_id in chosen]
    return shown, len(rows) - len(shown)


def notice_for(report: TargetArchiveReport, run_id: str) -> tuple[RunNotice, list[str]]:
    """The run notice for one target and the checks that failed (for the alert state)."""
    failing: list[str] = []
    if report.failed:
        failing.append("archive")
    if report.refused:
        failing.append("expiry")
    if report.unrecorded_count:
        failing.append("unrecorded backups")
    if report.purge_problems:
        failing.append("purge")
    if report.hidden_completed:
        failing.append("hidden backups")
    warned = report.refused or report.unrecorded_count or report.hidden_completed
    severity: Literal["critical", "warning", "info"] = (
        "critical" if report.failed or report.purge_problems else "warning" if warned else "info"
    )
    problems = [row for row in report.decisions if row.outcome in {"failed", "refused"}]
    return (
        RunNotice(
            source="archive",
            target=report.target,
            severity=severity,
            status="completed" if report.ok else "failed",
            run_id=run_id,
            summary=report.summary(),
            details={
                "counts": report.counts,
                "slots": report.slots,
                "archived": report.archived,
                "expired": report.expired,
                "failed": report.failed,
                "refused": report.refused,
                "deferred": report.deferred,
                "locked": report.locked,
                "purged": report.purged,
                "purge_locked": report.purge_locked,
                "purge_problems": report.purge_problems[:20],
                "hidden_backups": [
                    {"backup_id": hidden.backup_id, "keys": hidden.keys, "warning": hidden.warning()}
                    for hidden in report.hidden_completed[:20]
                ],
                "problems": [
                    {
                        "backup_id": row.backup_id,
                        "action": row.action,
                        "outcome": row.outcome,
                        "detail": row.detail,
                    }
                    for row in problems[:20]
                ],
                "unrecorded_backups": [
                    {"key": dump.key, "backup_id": dump.backup_id, "reason": dump.reason()}
                    for dump in report.unrecorded[:20]
                ],
                "failing_checks": failing,
            },
        ),
        failing,
    )
