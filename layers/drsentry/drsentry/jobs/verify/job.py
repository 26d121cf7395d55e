"""The verify job's entry points: one backup (`verify_backup`, also the drill's), one target
(`verify_target`), one scheduled event over its targets (`run_scheduled_verify`, the Lambda's
and `drsentry run verify`'s)."""

from __future__ import annotations

from collections.abc import Callable

from drsentry.core.config import TargetConfig
from drsentry.core.errors import BadInput
from drsentry.core.events import ScheduledEvent
from drsentry.core.records import BackupRecord, VerificationRecord
from drsentry.jobs.fargate.placement import Placement
from drsentry.jobs.runner import run_for_targets
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.verify.databases import SeveralDatabasesVerification
from drsentry.jobs.verify.interrupt import VerificationInterrupted
from drsentry.jobs.verify.report import VerifyRunResult, emit_rpo_signal, notice_for
from drsentry.jobs.verify.rules import choose_backups
from drsentry.jobs.verify.run import VerificationRun

LOCK_TTL_SECONDS = 3 * 3600


def verify_backup(
    runtime: Runtime,
    target_name: str,
    backup: BackupRecord,
    after_restore: Callable[[str], None] | None = None,
) -> VerificationRecord:
    """Restore one backup into a fresh scratch database, check it, drop it, record the result.

    Never raises for what it finds (a corrupt object, a scratch server that is down, a run
    out of time): those become a `failure` record. Raises only when the record itself
    cannot be written (CatalogError) or the target has no verify section (BadInput).
    """
    if backup.databases:
        return SeveralDatabasesVerification(runtime, target_name, backup, after_restore).execute()
    return VerificationRun(
        runtime, target_name, backup, runtime.catalog.verifications, after_restore
    ).execute()


def verify_target(runtime: Runtime, target_name: str) -> list[VerificationRecord]:
    """Verify the newest completed backup of a target (plus `sample_older` random older ones),
    emit the RPO signal and send one notice. An empty list: there was nothing to verify."""
    target = runtime.config.target(target_name)
    if target.verify is None:
        raise BadInput(f"target {target_name!r} has no verify section in the configuration")
    # In Lambda the lock need not outlive the invocation: a killed run must not block the next one.
    remaining = runtime.remaining_seconds()
    lock_seconds = LOCK_TTL_SECONDS if remaining is None else int(remaining) + 60
    runtime.catalog.locks.acquire(target_name, runtime.run_id, lock_seconds, job="verify")
    records: list[VerificationRecord] = []
    try:
        completed = [
            record for record in runtime.catalog.iter_backups(target_name) if record.status == "completed"
        ]
        for backup in choose_backups(completed, target.verify.sample_older):
            records.append(verify_backup(runtime, target_name, backup))
    except VerificationInterrupted as interrupted:
        # The interrupted verification is recorded as a failure: people hear of it as of any other.
        _send_notice(runtime, target_name, [*records, interrupted.record])
        raise
    finally:
        runtime.catalog.locks.release(target_name, runtime.run_id, job="verify")
    emit_rpo_signal(runtime, target_name, records)
    _send_notice(runtime, target_name, records)
    return records


def _send_notice(runtime: Runtime, target_name: str, records: list[VerificationRecord]) -> None:
    if runtime.notifier is not None:
        notice, failing = notice_for(runtime, target_name, records)
        runtime.notifier.send(notice, failing_checks=failing)


def no_verify_section(target: TargetConfig) -> str | None:
    if target.verify is None:
        return f"target {target.name!r} has no verify section in the configuration"
    return None


def run_scheduled_verify(
    runtime: Runtime, scheduled: ScheduledEvent, *, max_parallel: int = 1
) -> VerifyRunResult:
    """The verify function's whole job for one scheduled event (Lambda and CLI alike)."""
    placement = Placement(runtime, "verify")
    return run_for_targets(
        runtime,
        "verify",
        scheduled,
        lambda target: verify_target(placement.runtime_for(target), target.name),
        result_type=VerifyRunResult,
        max_parallel=max_parallel,
        not_configured=no_verify_section,
        hand_off=placement.hand_off,
    )
