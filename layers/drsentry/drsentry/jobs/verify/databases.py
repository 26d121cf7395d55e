"""Verification of a backup of several databases: one record for the backup, each database
restored into its own scratch database on the scratch server and checked as a single-database
backup is (`VerificationRun` on the record's view of that database), one after the other, each
scratch database dropped before the next is created.

Each database's checks are named after it (`analytics: row counts`); the storage buckets are
checked once, for the backup; the restore time is the sum of the databases' restores, judged
against the RTO once (a lost server comes back when its last database does).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, Check, CheckSeverity, VerificationRecord, VerifyServer
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.compare import storage_check_name
from drsentry.jobs.verify.checks import check_storage
from drsentry.jobs.verify.report import emit_metrics, verification_record
from drsentry.jobs.verify.rules import (
    ASSERTION_PREFIX,
    CHECK_RTO,
    CheckList,
    judge_restore_time,
)
from drsentry.jobs.verify.run import DatabaseScope, VerificationRun, put_verification


def database_check(database: str, check: Check) -> Check:
    return check.model_copy(update={"name": f"{database}: {check.name}"})


def summed_start(servers: list[VerifyServer]) -> float | None:
    """Seconds spent starting throwaway servers; None when none was started (standing)."""
    started = [server.start_seconds for server in servers if server.start_seconds is not None]
    return round(sum(started), 3) if started else None


class SeveralDatabasesVerification:
    """One verification of a backup whose record lists several databases."""

    def __init__(
        self,
        runtime: Runtime,
        target_name: str,
        backup: BackupRecord,
        after_restore: Callable[[str], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.target = runtime.config.target(target_name)
        self.backup = backup
        self.log = runtime.catalog.verifications
        # Drill smoke checks reach the application's database: the first one of the backup.
        self.after_restore = after_restore

    def execute(self) -> VerificationRecord:
        started = time.monotonic()
        names = self.backup.database_names
        checks: list[Check] = []
        restore_seconds = 0.0
        errors: list[str] = []
        servers: list[VerifyServer] = []
        checks_seconds = 0.0
        for index, view in enumerate(self.backup.database_views()):
            scope = DatabaseScope(names[index], index, names)
            run = VerificationRun(
                self.runtime,
                self.target.name,
                view,
                self.log,
                self.after_restore if index == 0 else None,
                database=scope,
            )
            try:
                run.restore_and_check()
            except KeyboardInterrupt as exc:
                # Stopped mid-way: the database being restored gets the failure record saying so.
                raise run.interrupted(exc) from exc
            checks += [
                database_check(scope.name, check)
                for check in run.checks.finish(run.skip_reason)
                if check.name != CHECK_RTO
            ]
            restore_seconds += run.restore_seconds or 0.0
            checks_seconds += run.checks_seconds or 0.0
            if (server := run.server_report()) is not None:
                servers.append(server)
            if run.run_error:
                errors.append(f"{scope.name}: {run.run_error}")
        checks += self._backup_checks(restore_seconds if not errors else None)
        record = verification_record(
            self.target.name,
            self.backup,
            self.runtime.clock(),
            checks,
            restore_seconds=round(restore_seconds, 3),
            run_error="; ".join(errors) or None,
            # Each database had a server of its own kind and version: the first one's report, the
            # start seconds summed (the time split covers every database).
            server=servers[0].model_copy(update={"start_seconds": summed_start(servers)})
            if servers
            else None,
            checks_seconds=round(checks_seconds, 3),
        ).model_copy(update={"runner": self.runtime.runner, "run_id": self.runtime.run_id})
        emit_metrics(record)
        record = put_verification(self.log, record)
        (logger.error if record.status == "failure" else logger.info)(
            "verification finished",
            extra={
                "target": record.target,
                "backup_id": record.backup_id,
                "databases": names,
                "status": record.status,
                "restore_seconds": record.restore_seconds,
                "seconds": round(time.monotonic() - started, 3),
                "error_details": record.error_details,
            },
        )
        return record

    def _backup_checks(self, restore_seconds: float | None) -> list[Check]:
        """What belongs to the backup as a whole: an assertion naming a database the backup
        does not hold, the total restore time, the storage buckets."""
        verify = self.target.verify
        assert verify is not None, "VerificationRun refuses a target without verify"
        names = self.backup.database_names
        strays = [a for a in verify.assertions if a.database is not None and a.database not in names]
        plan: list[tuple[str, CheckSeverity]] = [(f"{ASSERTION_PREFIX}{a.name}", a.severity) for a in strays]
        plan.append((CHECK_RTO, "warning"))
        plan += [(storage_check_name(bucket), "critical") for bucket in self.target.storage]
        checks = CheckList(plan)
        for assertion in strays:
            checks.failed(
                f"{ASSERTION_PREFIX}{assertion.name}",
                f"database {assertion.database!r} is not in backup {self.backup.backup_id} "
                f"(it holds {', '.join(names)})",
            )
        if restore_seconds is not None:
            judge_restore_time(checks, restore_seconds, self.runtime.config.rto.total_seconds())
        check_storage(self.runtime, self.backup, self.target.storage, verify.storage_drop_tolerance, checks)
        return checks.finish("a database's restore did not complete")
