"""The replication check's entry: ``run_scheduled_replication_check`` is the function's whole
job for one scheduled event (Lambda and CLI), through the one run loop; and the newest
check of a target, for ``drsentry status``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from drsentry.core.config import TargetConfig
from drsentry.core.events import ScheduledEvent
from drsentry.jobs.replication.check import check_replication
from drsentry.jobs.replication.report import ReplicationReport
from drsentry.jobs.replication.rules import CheckStatus, worst_status
from drsentry.jobs.runner import RunResult, run_for_targets

if TYPE_CHECKING:
    from drsentry.jobs.runtime import Runtime


def latest_replication_check(runtime: Runtime, target: str) -> ReplicationReport | None:
    """The newest replication check of a target (for `drsentry status`), or None."""
    fields = runtime.catalog.replication_checks.latest(target)
    return ReplicationReport.model_validate(fields) if fields is not None else None


class ReplicationCheckResult(RunResult[ReplicationReport]):
    records_key: ClassVar[str] = "reports"

    @property
    def status(self) -> CheckStatus | Literal["not-configured"]:
        """The worst status of the reports; `not-configured` when there was nothing to check."""
        if not self.records and self.not_configured:
            return "not-configured"
        statuses = [report.status for report in self.records]
        if self.not_run:
            statuses.append("failure")  # a target that could not be checked is not known to be safe
        return worst_status(statuses)

    def document(self) -> dict[str, Any]:
        return {**super().document(), "status": self.status}


def run_scheduled_replication_check(
    runtime: Runtime, scheduled: ScheduledEvent, *, max_parallel: int = 1
) -> ReplicationCheckResult:
    """The replication-check function's whole job for one scheduled event (Lambda and CLI)."""

    def no_replica(_target: TargetConfig) -> str | None:
        # Deployed without a replica: nothing to check, and not an error every hour.
        return None if runtime.config.storage.replica else "storage.replica is not configured"

    return run_for_targets(
        runtime,
        "replication-check",
        scheduled,
        lambda target: [check_replication(runtime, target.name)],
        result_type=ReplicationCheckResult,
        max_parallel=max_parallel,
        not_configured=no_replica,
    )
