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
from drsentry.core.records import BackupRecord, iso, parse_iso
from drsentry.jobs.archive.copy import archive_backup
from drsentry.jobs.archive.expire import StillLocked, expire_backup, expire_primary_copy
from drsentry.jobs.archive.purge import purge_withdrawn
from drsentry.jobs.archive.report import DecisionRow, TargetArchiveReport
from drsentry.jobs.backup.unrecorded import find_unrecorded
from drsentry.jobs.object_lock import backup_keys, lock_objects
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
            # A backup handed a longer-lived slot than it was locked for gets the later date.
            for decision in plan.decisions:
                self._extend_lock(rows[decision.backup_id], decision, records[decision.backup_id])
            # Expiries (and primary copies an archive copy now replaces) are a few small requests
            # each; a first run over a large old catalog has thousands, so they run side by side,
            # oldest first: should the run be cut short, the oldest garbage is gone already.
            expire = {"expire": expire_backup, "expire_primary": expire_primary_copy}
            due = [decision for decision in reversed(plan.decisions) if decision.action in expire]
            with ThreadPoolExecutor(max_workers=EXPIRE_CONCURRENCY, thread_name_prefix="expire") as pool:
                expiries = [
                    pool.submit(
                        self._apply,
                        rows[decision.backup_id],
                        partial(
                            expire[decision.action],
                            self.runtime,
                            records[decision.backup_id],
                            decision.reason,
                        ),
                    )
                    for decision in due
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
        # What failed backup runs withdrew (delete markers) is deleted here: the backup role may not.
        report.add_purge(purge_withdrawn(self.runtime, self.target.name, dry_run=self.dry_run))
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
        except StillLocked as exc:
            row.outcome, row.detail = "locked", str(exc)
            return
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

    def _extend_lock(self, row: DecisionRow, decision: gfs.RetentionDecision, record: BackupRecord) -> None:
        """Extend the primary and replica copies' Object Lock to the end of the longest slot the plan
        now gives the primary copy, when that is later than its lock; never shortened. Backups taken
        before the primary bucket had Object Lock (no `retain_until`) are left as they are."""
        if decision.action not in ("keep", "archive") or not record.retain_until or not record.lock_mode:
            return
        until = gfs.planned_retain_until(
            decision, self.config.retention, archive_enabled=self.config.storage.archive is not None
        )
        if until is None or until <= parse_iso(record.retain_until):
            return
        remaining = self.runtime.remaining_seconds()
        if remaining is not None and remaining < TIME_MARGIN_SECONDS:
            return  # the next run extends it, long before the current lock ends
        try:
            lock_objects(
                self.runtime.buckets.bucket(record.bucket),
                backup_keys(record),
                mode=record.lock_mode,
                until=until,
            )
            replica = self.config.storage.replica
            if replica is not None and record.replica == "ok":
                detail = record.replica_detail
                bucket = self.runtime.buckets.bucket(
                    (detail.bucket if detail else None) or replica.bucket,
                    (detail.region if detail else None) or replica.region,
                )
                lock_objects(bucket, backup_keys(record), mode=record.lock_mode, until=until)
            self.runtime.catalog.update_backup(record.target, record.backup_id, {"retain_until": iso(until)})
        except DrsentryError as exc:
            row.outcome, row.detail = "failed", f"extending its Object Lock to {iso(until)} failed: {exc}"
            logger.error(
                "lock extension failed",
                extra={"target": self.target.name, "backup_id": row.backup_id, "error": str(exc)},
            )
            return
        row.retain_until = iso(until)
