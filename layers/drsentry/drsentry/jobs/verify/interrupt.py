"""A verification that Ctrl-C or SIGTERM (ECS stopping its task) stopped: pg_restore is stopped
and the scratch database dropped on the way up (restore_stream, scratch.py), the run writes
its `failure` record (run.py), and this exception carries the record up to the target's
notice (job.py) and the CLI's one line and exit code (130 / 143)."""

from __future__ import annotations

from drsentry.core.errors import Interrupted
from drsentry.core.records import VerificationRecord
from drsentry.jobs.verify.scratch import ScratchDatabase


def signal_of(exc: KeyboardInterrupt) -> str:
    """The signal's name; a bare KeyboardInterrupt is Ctrl-C."""
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"


class VerificationInterrupted(Interrupted):
    """Interrupted, with the `failure` record the verification wrote for it."""

    def __init__(self, cause: KeyboardInterrupt, detail: str, record: VerificationRecord) -> None:
        signal = Interrupted.of(cause, detail)
        super().__init__(signal.signal_name, signal.exit_code, detail)
        self.record = record

    @classmethod
    def of_run(
        cls,
        cause: KeyboardInterrupt,
        step: str,
        scratch: ScratchDatabase | None,
        record: VerificationRecord,
        *,
        recorded: bool,
    ) -> VerificationInterrupted:
        """The one line: what was interrupted at which step, what became of the scratch database
        and of the record."""
        what = f"verification of backup {record.backup_id} of {record.target}"
        logged = "recorded as failure" if recorded else f"not recorded: {record.error_details}"
        line = f"{what} interrupted by {signal_of(cause)} at {step!r}: {scratch_left(scratch)}; {logged}"
        return cls(cause, line, record)


def scratch_left(scratch: ScratchDatabase | None) -> str:
    if scratch is None or not scratch.created:
        return "no scratch database was created"
    if scratch.dropped:
        return "scratch database dropped"
    return "dropping the scratch database failed, the next run removes it"
