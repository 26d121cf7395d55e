"""The archive job's entry points: one target (`archive_target`) and one scheduled event
(`run_scheduled_archive`, for the Lambda handler and `drsentry run archive` alike)."""

from __future__ import annotations

from typing import ClassVar

from drsentry.core import observability
from drsentry.core.errors import BadInput, DrsentryError
from drsentry.core.events import ScheduledEvent
from drsentry.core.observability import logger
from drsentry.jobs.archive.report import TargetArchiveReport, notice_for
from drsentry.jobs.archive.run import ArchiveRun
from drsentry.jobs.runner import RunResult, run_for_targets
from drsentry.jobs.runtime import Runtime


def archive_target(runtime: Runtime, target_name: str, *, dry_run: bool = False) -> TargetArchiveReport:
    """Plan and apply retention for one target; metrics and a notice unless it is a dry run.

    Never raises for a failed copy or delete (they are in the report). A target that cannot
    be planned at all (catalog or verification log unreadable) raises, after counting an
    ArchiveFailure for its alarm; a scheduled run (jobs.runner) contains and alerts it.
    """
    try:
        report = ArchiveRun(runtime, target_name, dry_run=dry_run).execute()
    except DrsentryError as exc:
        if not dry_run and not isinstance(exc, BadInput):
            observability.put_metric(observability.ARCHIVE_FAILURE, "Count", 1, target_name)
        raise
    logger.info(
        "archive summary",
        extra={
            "target": target_name,
            "summary": report.summary(),
            "counts": report.counts,
            "slots": report.slots,
        },
    )
    if dry_run:
        return report
    failures = report.failed + report.refused
    observability.put_metric(observability.ARCHIVE_FAILURE, "Count", failures, target_name)
    observability.put_metric(observability.ARCHIVED_BACKUPS, "Count", report.archived, target_name)
    observability.put_metric(observability.EXPIRED_BACKUPS, "Count", report.expired, target_name)
    if runtime.notifier is not None:
        notice, failing = notice_for(report, runtime.run_id)
        runtime.notifier.send(notice, failing_checks=failing)
    return report


class ArchiveRunResult(RunResult[TargetArchiveReport]):
    records_key: ClassVar[str] = "targets"


def run_scheduled_archive(
    runtime: Runtime, scheduled: ScheduledEvent, *, max_parallel: int = 1
) -> ArchiveRunResult:
    """The archive function's whole job for one scheduled event (Lambda and CLI alike)."""
    dry_run = scheduled.detail.dry_run
    return run_for_targets(
        runtime,
        "archive",
        scheduled,
        lambda target: [archive_target(runtime, target.name, dry_run=dry_run)],
        result_type=ArchiveRunResult,
        max_parallel=max_parallel,
        # A dry run changes nothing, so there is nothing to protect from a second delivery.
        idempotent=not dry_run,
    )
