"""The archive run of one target: plan retention (core/gfs.py), then apply the plan.

Copies first, one at a time; then expiries side by side, oldest first. Each action's outcome
lands on its row of the report; one backup's failure never stops the others, and what is
left when Lambda's time runs short is deferred to the next run.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from drsentry.core import gfs
from drsentry.core.errors import DeleteRefused, DrsentryError
from drsentry.core.gfs import RetentionPlan
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord
from drsentry.jobs.archive.copy import archive_backup
from drsentry.jobs.archive.expire import expire_backup
from drsentry.jobs.archive.report import DecisionRow, TargetArchiveReport
from drsentry.jobs.backup.unrecorded import find_unrecorded
from drsentry.jobs.runtime import Runtime

# Stop this long before Lambda's hard limit; what is left waits for the next run.
TIME_MARGIN_SECONDS = 60.0
EXPIRE_CONCURRENCY = 8


class ArchiveRun:
    """Plan and apply retention for one target."""

    def __init__(self, runtime: Runtime, target_name: str, *, dry_run: bool = False) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.target = runtime.config.target(target_name)
        self.dry_run = dry_run
        self.now = runtime.clock()

    def plan(self) -> tuple[RetentionPlan, dict[str, BackupRecord]]:
        records = {record.backup_id: record for record in self.runtime.catalog.iter_backups(self.target.name)}
        verified = {
            verification.backup_id
            for verification in self.runtime.catalog.verifications.iter(self.target.name)
            if verification.status == "success"
        }
        plan = gfs.plan_retention(
            list(records.values()),
            now=self.now,
            retention=self.config.retention,
            rpo=self.config.rpo,
            verified_success=verified,
            archive_enabled=self.config.storage.archive is not None,
        )
        return plan, records

    def execute(self) -> TargetArchiveReport:
        plan, records = self.plan()
        report = TargetArchiveReport(
            target=self.target.name,
            dry_run=self.dry_run,
            planned_at=plan.planned_at,
            counts=plan.counts,
            slots=dict(plan.slot_counts()),
        )
        rows = {decision.backup_id: DecisionRow.of(decision) for decision in plan.decisions}
        if self.dry_run:
            for row in rows.values():
                if row.action != "keep":
                    row.outcome = "planned"
        else:
            # Copies first, one at a time (each is already a parallel multipart copy): a
            # month's archive copy matters more than reclaiming space.
            for decision in plan.with_action("archive"):
                record = records[decision.backup_id]
                self._apply(rows[decision.backup_id], partial(archive_backup, self.runtime, record, self.now))
            # Expiries are a few small requests each; a first run over a large old catalog
            # has thousands, so they run side by side, oldest first: should the run be cut
            # short, the oldest garbage is gone already.
            with ThreadPoolExecutor(max_workers=EXPIRE_CONCURRENCY, thread_name_prefix="expire") as pool:
                expiries = [
                    pool.submit(
                        self._apply,
                        rows[decision.backup_id],
                        partial(expire_backup, self.runtime, records[decision.backup_id], decision.reason),
                    )
                    for decision in reversed(plan.with_action("expire"))
                ]
                try:
                    for expiry in expiries:
                        expiry.result()  # an unexpected error surfaces here instead of vanishing in a thread
                except KeyboardInterrupt:
                    # Ctrl-C or SIGTERM (ECS kills the task 30 s later): the expiries running finish,
                    # a few requests each; those not started are left for the next run.
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
        report.count_outcomes(list(rows.values()))
        report.list_unrecorded(find_unrecorded(self.runtime, self.target.name))
        return report

    def _apply(self, row: DecisionRow, action: Callable[[], str]) -> None:
        """Run one action and record its outcome on its row (each row has one writer)."""
        context = {"target": self.target.name, "backup_id": row.backup_id}
        remaining = self.runtime.remaining_seconds()
        if remaining is not None and remaining < TIME_MARGIN_SECONDS:
            row.outcome, row.detail = "deferred", f"{remaining:.0f}s of run time left; next run"
            return
        try:
            row.detail = action()
        except DeleteRefused as exc:
            row.outcome, row.detail = "refused", str(exc)
            logger.warning("expiry refused", extra={**context, "error": str(exc)})
            return
        except DrsentryError as exc:
            # One backup's failure must not stop the others; it is reported and retried next run.
            row.outcome, row.detail = "failed", str(exc)
            logger.error(f"{row.action} failed", extra={**context, "error": str(exc)})
            return
        row.outcome = "done"
        logger.info(f"{row.action} done", extra={**context, "detail": row.detail})
