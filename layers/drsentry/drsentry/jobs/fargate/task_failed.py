"""The state machine's failure step: record a Fargate run that could not record itself.

A task that runs to its end writes its own record and sends its own notice, whether the
backup or verification succeeded or failed. The state machine calls this step when the task
exited non-zero, was stopped or OOM-killed, never started, or outran the state machine's
timeout. If the run's record is in the catalog (found by the run id the state machine gave
the task), there is nothing to add; otherwise this writes the `failed` backup record or the
`failure` verification record a Lambda run would have written, sends the same notice, and
gives back the run's lock so the next run need not wait for it to expire. Calling it twice
for one run writes one record.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict

from drsentry.core import observability
from drsentry.core.observability import logger
from drsentry.core.records import (
    BackupRecord,
    Check,
    RunnerUsed,
    VerificationRecord,
    iso,
    new_backup_id,
)
from drsentry.jobs.backup import rules as backup_rules
from drsentry.jobs.fargate.rules import FargateJob
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.verify import report as verify_report
from drsentry.jobs.verify.rules import CHECK_RESTORE

# How far back the run's own record is looked for: the run writes at most a few.
RECENT_RECORDS = 20


class StoppedContainer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ExitCode: int | None = None
    # e.g. "OutOfMemoryError: Container killed due to memory usage"
    Reason: str | None = None


class DescribedTask(BaseModel):
    """The stopped task as ecs:runTask.sync returns it (DescribeTasks, keys in PascalCase)."""

    model_config = ConfigDict(extra="ignore")

    StopCode: str | None = None
    StoppedReason: str | None = None


class StoppedTask(BaseModel):
    """The state machine's RunTask result: its one container picked out, and the whole task."""

    model_config = ConfigDict(extra="ignore")

    Container: StoppedContainer = StoppedContainer()
    Task: DescribedTask = DescribedTask()


class StepError(BaseModel):
    """What a Catch caught (States.Timeout, States.TaskFailed, ...)."""

    model_config = ConfigDict(extra="ignore")

    Error: str
    Cause: str | None = None


class TaskFailure(BaseModel):
    """The failure step's input: the execution's input plus what became of the task."""

    model_config = ConfigDict(extra="ignore")

    job: FargateJob
    target: str
    run_id: str
    reason: str | None = None
    task: StoppedTask | None = None
    error: StepError | None = None

    def describe(self) -> str:
        """One line saying why the Fargate run ended without its record."""
        if self.error is not None:
            if self.error.Error == "States.Timeout":
                return "the Fargate run outran the state machine's timeout and was stopped"
            return f"the Fargate task failed: {self.error.Error}: {cause_line(self.error.Cause)}"
        task = self.task or StoppedTask()
        container = task.Container
        stopped = "; ".join(part for part in (container.Reason, task.Task.StoppedReason) if part)
        if container.ExitCode is None:
            return f"the Fargate task stopped before its container ran: {stopped or 'no reason given'}"
        return f"the Fargate task exited {container.ExitCode}" + (f": {stopped}" if stopped else "")


def cause_line(cause: str | None) -> str:
    """A Catch's Cause is the stopped task as JSON for an ECS failure; its stop reason, or the text."""
    if not cause:
        return "no cause given"
    try:
        described = json.loads(cause)
    except ValueError:
        return cause.strip().splitlines()[0][:300]
    if isinstance(described, dict):
        return str(described.get("StoppedReason") or described.get("stoppedReason") or cause[:300])
    return cause[:300]


class FailureOutcome(BaseModel):
    job: FargateJob
    target: str
    run_id: str
    recorded: bool
    detail: str


def record_task_failure(runtime: Runtime, failure: TaskFailure) -> FailureOutcome:
    runtime = runtime_of_the_task(runtime, failure)
    outcome = FailureOutcome(
        job=failure.job, target=failure.target, run_id=failure.run_id, recorded=False, detail=""
    )
    if run_recorded(runtime, failure):
        return outcome.model_copy(update={"detail": "the run wrote its own record"})
    why = failure.describe()
    if failure.job == "backup":
        backup = failed_backup(runtime, failure.target, why)
        # Metrics first, as a Lambda run does: the backup-failed alarm sees it even if the catalog does not.
        for name, unit, value in backup_rules.backup_metrics(backup, None):
            observability.put_metric(name, unit, value, backup.target)
        runtime.catalog.put_backup(backup)
        runtime.catalog.locks.release(failure.target, failure.run_id, job="backup")
        if runtime.notifier is not None:
            runtime.notifier.send(backup_rules.notice_for(backup, runtime.run_id), failing_checks=["backup"])
        detail = f"backup {backup.backup_id} recorded as failed: {why}"
    else:
        verification = failed_verification(runtime, failure.target, why)
        runtime.catalog.locks.release(failure.target, failure.run_id, job="verify")
        if verification is None:
            return outcome.model_copy(update={"detail": f"no completed backup to record against: {why}"})
        verify_report.emit_metrics(verification)
        runtime.catalog.verifications.put(verification)
        if runtime.notifier is not None:
            notice, failing = verify_report.notice_for(runtime, failure.target, [verification])
            runtime.notifier.send(notice, failing_checks=failing)
        detail = f"verification {verification.id} recorded as failure: {why}"
    logger.error("fargate run failed", extra={"target": failure.target, "job": failure.job, "error": why})
    return outcome.model_copy(update={"recorded": True, "detail": detail})


def runtime_of_the_task(runtime: Runtime, failure: TaskFailure) -> Runtime:
    """The failure step speaks for the task: its run id and its runner on the record and notice."""
    reason = failure.reason or "started as a Fargate task"
    return replace(runtime, run_id=failure.run_id, runner=RunnerUsed(name="fargate", reason=reason))


def run_recorded(runtime: Runtime, failure: TaskFailure) -> bool:
    records: list[Any]
    if failure.job == "backup":
        records = runtime.catalog.list_backups(failure.target, limit=RECENT_RECORDS)
    else:
        verifications = runtime.catalog.verifications.iter(failure.target)
        records = [record for _, record in zip(range(RECENT_RECORDS), verifications, strict=False)]
    return any(record.run_id == failure.run_id for record in records)


def failed_backup(runtime: Runtime, target: str, why: str) -> BackupRecord:
    now = runtime.clock()
    backup_id = new_backup_id(now)
    key, manifest_key = backup_rules.object_keys(runtime.config.storage.prefix, target, backup_id)
    return BackupRecord(
        target=target,
        backup_id=backup_id,
        status="failed",
        started_at=iso(now),
        finished_at=iso(now),
        bucket=runtime.config.storage.bucket,
        key=key,
        manifest_key=manifest_key,
        error=why,
        run_id=runtime.run_id,
        runner=runtime.runner,
    )


def failed_verification(runtime: Runtime, target: str, why: str) -> VerificationRecord | None:
    """A `failure` record against the backup the run would have verified (the newest completed)."""
    newest = runtime.catalog.latest_completed(target)
    if newest is None:
        return None
    restore = Check(name=CHECK_RESTORE, severity="critical", status="failed", detail=why)
    record = verify_report.verification_record(
        target, newest, runtime.clock(), [restore], restore_seconds=None, run_error=why
    )
    return record.model_copy(update={"runner": runtime.runner, "run_id": runtime.run_id})
