"""One scheduled run of a job over its targets, with one failure rule for every job.

Backup, verify, archive and replication-check all run the same way for a scheduled event
(from EventBridge Scheduler through their Lambda, or `drsentry run JOB`):

1. Targets: the one the event names (a per-target schedule's run covers exactly that target),
   or all, one after another or `max_parallel` at once (the CLI's). A target the job is not configured for
   (no `verify` section, no replica) is `not_configured` in a run over all targets, and
   bad input when the event names it.
2. Once per event: the whole run sits behind the idempotency guard keyed (job, event
   id, target or "*"), so a retried schedule returns the first run's result.
3. The failure rule: what a job finds (a failed dump, a failed check) is its record, and
   the job itself notifies. A target that cannot run at all (its lock is held, the catalog
   or a bucket is unreachable, its record cannot be written: any DrsentryError that is
   not BadInput) is contained here: logged, recorded in the result, alerted with exactly
   one notice (lock held: `skipped`, a warning; anything else: critical "<job> of
   <target> could not run: ..."), and the other targets still run. BadInput and bugs
   propagate: they are wrong for every target alike.
4. The result is a typed `RunResult` over the job's record type, stored as JSON in the
   idempotency record and validated back on replay; `document()` is the JSON that
   `drsentry run JOB --json` prints and the handler returns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from drsentry.core.config import TargetConfig
from drsentry.core.errors import (
    BadInput,
    CatalogError,
    CatalogWriteFailed,
    DrsentryError,
    RunInProgress,
    StorageError,
)
from drsentry.core.events import ScheduledEvent
from drsentry.core.observability import logger
from drsentry.core.records import RunNotice, Source
from drsentry.jobs.idempotency import once_per_event
from drsentry.jobs.parallel import run_in_parallel
from drsentry.jobs.runtime import Runtime

RecordT = TypeVar("RecordT", bound=BaseModel)
ResultT = TypeVar("ResultT", bound="RunResult[Any]")

# `handed_off`: sent to the Fargate state machine (the reason is the execution ARN).
TargetState = Literal["ran", "skipped", "not_run", "not_configured", "handed_off"]


class TargetOutcome(BaseModel):
    """What became of one target in a run; `reason` says why it did not run."""

    target: str
    outcome: TargetState
    reason: str | None = None


class RunResult(BaseModel, Generic[RecordT]):
    """One scheduled run of a job: per-target outcomes and the records the job produced."""

    # Where `document()` puts the records: the key users' scripts read today.
    records_key: ClassVar[str] = "records"

    source: Source
    event_id: str
    run_id: str
    dry_run: bool = False
    outcomes: list[TargetOutcome] = Field(default_factory=list)
    records: list[RecordT] = Field(default_factory=list)

    def targets(self, state: TargetState) -> list[TargetOutcome]:
        return [outcome for outcome in self.outcomes if outcome.outcome == state]

    @property
    def skipped(self) -> list[TargetOutcome]:
        """Targets whose lock another run held."""
        return self.targets("skipped")

    @property
    def not_run(self) -> list[TargetOutcome]:
        """Targets that could not run (catalog or storage unreachable, record not written)."""
        return self.targets("not_run")

    @property
    def not_configured(self) -> list[str]:
        return [outcome.target for outcome in self.targets("not_configured")]

    def document(self) -> dict[str, Any]:
        """The JSON of `drsentry run JOB --json` (and of the handler's return value)."""
        return {
            "source": self.source,
            "event_id": self.event_id,
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            self.records_key: [record.model_dump(mode="json") for record in self.records],
            "outcomes": [outcome.model_dump(mode="json") for outcome in self.outcomes],
            "skipped": [{"target": o.target, "reason": o.reason} for o in self.skipped],
            "not_run": [{"target": o.target, "reason": o.reason} for o in self.not_run],
            "not_configured": self.not_configured,
        }


def always_configured(_target: TargetConfig) -> str | None:
    return None


def run_for_targets(
    runtime: Runtime,
    job: Source,
    scheduled: ScheduledEvent,
    run_target: Callable[[TargetConfig], Sequence[BaseModel]],
    *,
    result_type: type[ResultT],
    not_configured: Callable[[TargetConfig], str | None] = always_configured,
    idempotent: bool = True,
    max_parallel: int = 1,
    hand_off: Callable[[TargetConfig], str | None] | None = None,
) -> ResultT:
    """Run `run_target` for every selected target under the one failure rule (module docstring).

    `not_configured(target)` returns why the job does not apply to a target, or None.
    `idempotent=False` only for a run that changes nothing (a dry run). `max_parallel` targets
    run at once (jobs.parallel); 1, a Lambda's, runs them one after another.
    `hand_off(target)` runs the target elsewhere (Fargate) and returns where, or None to run it here;
    its failures fall under the same rule as the run's.
    """
    named = scheduled.detail.target
    targets = runtime.config.selected_targets(named)  # UnknownTarget for a name not in the config
    if named is not None and (reason := not_configured(targets[0])) is not None:
        raise BadInput(reason)

    def run_target_contained(target: TargetConfig) -> tuple[TargetOutcome, Sequence[BaseModel]]:
        reason = not_configured(target)
        if reason is not None:
            logger.info(f"{job} not configured", extra={"target": target.name, "reason": reason})
            return TargetOutcome(target=target.name, outcome="not_configured", reason=reason), []
        try:
            handed_to = hand_off(target) if hand_off and not scheduled.detail.dry_run else None
            if handed_to is not None:
                return TargetOutcome(target=target.name, outcome="handed_off", reason=handed_to), []
            produced = run_target(target)
        except BadInput:
            raise
        except DrsentryError as exc:
            # A dry run changes nothing and tells nobody: its output is for the operator.
            alert = not scheduled.detail.dry_run
            return contain_failure(runtime, job, target.name, exc, alert=alert), []
        return TargetOutcome(target=target.name, outcome="ran"), produced

    def work() -> ResultT:
        if max_parallel > 1 and len(targets) > 1:
            ran = run_in_parallel(run_target_contained, targets, max_parallel)
        else:
            ran = [run_target_contained(target) for target in targets]
        return result_type(
            source=job,
            event_id=scheduled.id,
            run_id=runtime.run_id,
            dry_run=scheduled.detail.dry_run,
            outcomes=[outcome for outcome, _ in ran],
            records=[record for _, produced in ran for record in produced],
        )

    if not idempotent:
        return work()
    request = {"source": job, "event_id": scheduled.id, "target": named or "*"}
    return once_per_event(runtime, request, result_type, work)


def contain_failure(
    runtime: Runtime, job: Source, target: str, exc: DrsentryError, *, alert: bool = True
) -> TargetOutcome:
    """Log, alert (one notice) and record a target that could not run."""
    reason = str(exc)
    one_line = (reason.strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, RunInProgress):
        # A skipped run is a missed recovery point (or check): people hear of it, as a warning.
        logger.warning(f"{job} skipped", extra={"target": target, "reason": reason})
        outcome = TargetOutcome(target=target, outcome="skipped", reason=reason)
        severity, status, summary, details = "warning", "skipped", "skipped", {"reason": reason}
    else:
        logger.error(f"{job} not run", extra={"target": target, "error": reason})
        outcome = TargetOutcome(target=target, outcome="not_run", reason=reason)
        severity, status, summary, details = "critical", "failed", "could not run", {"error": reason}
    notice = RunNotice(
        source=job,
        target=target,
        severity=severity,
        status=status,
        run_id=runtime.run_id,
        summary=f"{job} of {target} {summary}: {one_line}",
        details=details,
    )
    if alert and runtime.notifier is not None:
        runtime.notifier.send(notice, failing_checks=[failing_check(exc)])
    return outcome


def failing_check(exc: DrsentryError) -> str:
    """What failed, for the alert state: the same cause is one ongoing failure, not a new one."""
    if isinstance(exc, RunInProgress):
        return "lock"
    if isinstance(exc, CatalogError | CatalogWriteFailed):
        return "catalog"
    if isinstance(exc, StorageError):
        return "storage"
    return "run"
