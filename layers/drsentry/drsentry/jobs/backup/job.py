"""The backup job's entry points: one target (`backup_target`, also the drill's) and one
scheduled run over every target (`run_scheduled_backup`, the Lambda's and the CLI's)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from drsentry.core.events import ScheduledEvent
from drsentry.core.records import BackupRecord
from drsentry.jobs.backup.rules import notice_for
from drsentry.jobs.backup.run import BackupRun
from drsentry.jobs.fargate.placement import Placement
from drsentry.jobs.replication.copy import replicate_backup
from drsentry.jobs.runner import RunResult, run_for_targets
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.write import write_storage_manifests


def backup_target(runtime: Runtime, target_name: str) -> BackupRecord:
    """Back up one target, record the result, and notify. A failed dump is a `failed` record.

    Raises RunInProgress when another backup of the target holds its lock, and CatalogError /
    CatalogWriteFailed when the record cannot be written: a scheduled run (jobs.runner)
    contains and alerts those."""
    record = BackupRun(runtime, target_name).execute()
    # copy mode: the replica copy right after the backup; a failed copy never fails it.
    record = replicate_backup(runtime, record)
    record = write_storage_manifests(runtime, record)
    if runtime.notifier is not None:
        failing = ["backup"] if record.status == "failed" else []
        runtime.notifier.send(notice_for(record, runtime.run_id), failing_checks=failing)
    return record


class BackupSummary(BackupRecord):
    """A backup record in a run's result. The result is also the idempotency record (a DynamoDB
    item, 400 KB at most): per-table row counts stay in the catalog and the manifest."""

    tables: dict[str, int] = Field(default_factory=dict, exclude=True)
    table_count: int = 0

    @classmethod
    def of(cls, record: BackupRecord) -> BackupSummary:
        return cls(**record.model_dump(exclude={"tables"}), table_count=len(record.tables))


class BackupRunResult(RunResult[BackupSummary]):
    records_key: ClassVar[str] = "backups"

    def document(self) -> dict[str, Any]:
        # `errors`, as scripts read it before `not_run` said the same for every job.
        errors = [{"target": outcome.target, "error": outcome.reason} for outcome in self.not_run]
        return {**super().document(), "errors": errors}


def run_scheduled_backup(
    runtime: Runtime, scheduled: ScheduledEvent, *, max_parallel: int = 1
) -> BackupRunResult:
    """The backup function's whole job for one scheduled event (Lambda and CLI alike)."""
    placement = Placement(runtime, "backup")
    return run_for_targets(
        runtime,
        "backup",
        scheduled,
        lambda target: [BackupSummary.of(backup_target(placement.runtime_for(target), target.name))],
        result_type=BackupRunResult,
        max_parallel=max_parallel,
        hand_off=placement.hand_off,
    )
