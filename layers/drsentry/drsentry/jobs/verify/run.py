"""One verification of one backup, start to record: prepare (credentials, the safety rule,
pg_restore), the scratch server (the target's standing one, or a throwaway one started for the
run and checked for the extensions the backup needs), create the scratch database, stream the
object into it, judge the stream, run the checks, drop the scratch database (and the throwaway
server), record.

It never raises for what it finds: a step that cannot go on raises StepFailed, which fails
its check and skips the rest with the reason; an unforeseen domain or OS error does the same
for the first check not yet run. Every message is cleaned of the DSNs' passwords.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from drsentry.adapters import postgres
from drsentry.adapters.pgtools import PgTool, find_tool, major_version
from drsentry.adapters.restore_stream import (
    RESTORE_SESSION_SETTINGS,
    RestoreOutcome,
    RestoreTimedOut,
    stream_restore,
)
from drsentry.adapters.secrets import sanitize
from drsentry.adapters.table.verifications import VerificationLog
from drsentry.core.config import VerifyConfig
from drsentry.core.errors import BadInput, CatalogError, DrsentryError, StorageError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, VerificationRecord, VerifyServer
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.verify.checks import RestoredDatabaseChecks, check_storage
from drsentry.jobs.verify.interrupt import VerificationInterrupted, signal_of
from drsentry.jobs.verify.report import emit_metrics, verification_record
from drsentry.jobs.verify.roles_step import bring_roles
from drsentry.jobs.verify.rules import (
    CHECK_OBJECT,
    CHECK_RESTORE,
    CheckList,
    Expected,
    StepFailed,
    TimeLeft,
    VerificationRefused,
    check_plan,
    expected_contents,
    judge_restore_time,
    judge_stream,
    refuse_unsafe_scratch,
    scratch_database_name,
    verify_for_database,
)
from drsentry.jobs.verify.scratch import (
    APPLICATION_NAME,
    ScratchDatabase,
    ScratchServer,
    connect,
    require_extensions,
    scratch_server,
)

# A scratch server need not have the source's tablespaces or security label providers,
# and a restored subscription must never start pulling from the source's publisher.
RESTORE_OPTIONS = ("--no-tablespaces", "--no-subscriptions", "--no-security-labels")
# The scratch database is dropped after the checks: its commits need not wait for the disk.
SCRATCH_SESSION_SETTINGS = {**RESTORE_SESSION_SETTINGS, "synchronous_commit": "off"}


@dataclass(frozen=True)
class DatabaseScope:
    """Which database of a backup of several a run verifies: its name, its place, all of them."""

    name: str
    index: int
    names: list[str]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def put_verification(log: VerificationLog, record: VerificationRecord) -> VerificationRecord:
    """The record as written, or with a note that the log refused it."""
    try:
        log.put(record)
    except CatalogError as exc:
        logger.error("verification not recorded", extra={"backup_id": record.backup_id, "error": str(exc)})
        note = f"not recorded in the verification log: {exc}"
        return record.model_copy(
            update={"error_details": f"{record.error_details}; {note}" if record.error_details else note}
        )
    return record


def restore_tool(pg_bin_dir: str | None, backup: BackupRecord) -> PgTool:
    """The pg_restore that can read the backup's archive (its major at least pg_dump's)."""
    try:
        pg_restore = find_tool("pg_restore", pg_bin_dir)
    except DrsentryError as exc:
        raise StepFailed(CHECK_RESTORE, str(exc)) from exc
    dumped_by = backup.pg_dump_version
    if dumped_by and pg_restore.major < major_version(dumped_by):
        raise StepFailed(
            CHECK_RESTORE,
            f"pg_restore {pg_restore.version} ({pg_restore.path}) cannot read an archive written by "
            f"pg_dump {dumped_by}; install pg_restore {major_version(dumped_by)} or newer",
        )
    return pg_restore


class VerificationRun:
    def __init__(
        self,
        runtime: Runtime,
        target_name: str,
        backup: BackupRecord,
        log: VerificationLog,
        after_restore: Callable[[str], None] | None = None,
        *,
        database: DatabaseScope | None = None,
    ) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.target = runtime.config.target(target_name)
        if self.target.verify is None:
            raise BadInput(f"target {target_name!r} has no verify section in the configuration")
        self.verify: VerifyConfig = self.target.verify
        self.backup = backup
        self.log = log
        self.scratch_db = scratch_database_name(backup.backup_id)
        # One database of a backup of several (`backup` its view): its own scratch database and
        # the checks the config gives it; the storage buckets are checked once, for the backup.
        self.database = database
        storage = self.target.storage
        if database is not None:
            self.scratch_db = scratch_database_name(backup.backup_id, database.index)
            self.verify = verify_for_database(self.verify, database.name, database.names)
            storage = []
        self.checks = CheckList(check_plan(self.verify, storage))
        self.time_left = TimeLeft(runtime.remaining_seconds)
        # Called with the restored database's DSN after the checks, before it is dropped (drill smoke checks).
        self.after_restore = after_restore
        self.restore_seconds: float | None = None
        self.checks_seconds: float | None = None
        self.server: ScratchServer | None = None
        self._scratch: ScratchDatabase | None = None
        self.run_error: str | None = None
        self.skip_reason = "an earlier step failed"
        self._dsns: list[str] = []

    def execute(self) -> VerificationRecord:
        started = time.monotonic()
        logger.info(
            "verification starting",
            extra={
                "target": self.target.name,
                "backup_id": self.backup.backup_id,
                "scratch_database": self.scratch_db,
            },
        )
        try:
            self._run_checks()
        except KeyboardInterrupt as exc:
            raise self.interrupted(exc) from exc  # pg_restore stopped, scratch dropped: record it
        record = self._record()
        # Metrics first, and a log that cannot be written does not swallow the finding:
        # the run notice still carries it.
        emit_metrics(record)
        record = put_verification(self.log, record)
        log = logger.error if record.status == "failure" else logger.info
        log(
            "verification finished",
            extra={
                "target": record.target,
                "backup_id": record.backup_id,
                "status": record.status,
                "restore_seconds": record.restore_seconds,
                "seconds": round(time.monotonic() - started, 3),
                "error_details": record.error_details,
            },
        )
        return record

    def server_report(self) -> VerifyServer | None:
        """The record's `server`: None when the run stopped before it had one."""
        return self.server.reported(self._scratch) if self.server is not None else None

    def _run_checks(self) -> None:
        self.restore_and_check()
        check_storage(
            self.runtime, self.backup, self.target.storage, self.verify.storage_drop_tolerance, self.checks
        )

    def _record(self) -> VerificationRecord:
        return verification_record(
            self.target.name,
            self.backup,
            self.runtime.clock(),
            self.checks.finish(self.skip_reason),
            restore_seconds=self.restore_seconds,
            run_error=self.run_error,
            server=self.server_report(),
            checks_seconds=self.checks_seconds,
        ).model_copy(update={"runner": self.runtime.runner, "run_id": self.runtime.run_id})

    def interrupted(self, exc: KeyboardInterrupt) -> VerificationInterrupted:
        """Ctrl-C or SIGTERM: the step the run was at fails "interrupted by SIGNAL", the rest is skipped
        (the storage checks too: ECS kills the task 30 s after SIGTERM); the `failure` record."""
        # Until the restore has been judged, the run is restoring (or preparing to): its step.
        step = self.checks.first_pending() if self.restore_seconds is not None else CHECK_RESTORE
        self._stopped(step, f"interrupted by {signal_of(exc)}")
        record = self._record()
        emit_metrics(record)
        written = self._put(record)  # the same record, or a copy saying the log refused it
        return VerificationInterrupted.of_run(exc, step, self._scratch, written, recorded=written is record)

    def _put(self, record: VerificationRecord) -> VerificationRecord:
        """The record as written, or with a note that the log refused it."""
        try:
            self.log.put(record)
        except CatalogError as exc:
            logger.error(
                "verification not recorded", extra={"backup_id": record.backup_id, "error": str(exc)}
            )
            note = f"not recorded in the verification log: {exc}"
            return record.model_copy(
                update={"error_details": f"{record.error_details}; {note}" if record.error_details else note}
            )
        return record

    def restore_and_check(self) -> None:
        """Restore into the scratch database and check it; what fails is in `checks`."""
        try:
            self._verify()
        except StepFailed as exc:
            self._stopped(exc.check, exc.detail)
        except (DrsentryError, OSError) as exc:
            # Unforeseen, but still a verification that did not complete: record it as such.
            self._stopped(self.checks.first_pending(), f"{type(exc).__name__}: {_first_line(exc)}")

    def _stopped(self, check: str, detail: str) -> None:
        detail = self._clean(detail)
        self.checks.failed(check, detail)
        self.run_error = f"{check}: {detail}"
        self.skip_reason = detail

    def _clean(self, text: str) -> str:
        return sanitize(text, *self._dsns)

    def _verify(self) -> None:
        scratch_dsn, pg_restore = self._prepare()
        with scratch_server(scratch_dsn, self.backup, self.config.pg_bin_dir) as server:
            self.server = server
            self._dsns.append(server.dsn)
            scratch = ScratchDatabase(
                server.dsn, self.scratch_db, self.runtime.run_id, self.runtime.clock, self._clean
            )
            scratch.drop_after = not server.throwaway
            self._scratch = scratch
            with scratch.created_for_the_run():
                if server.throwaway:
                    require_extensions(server, self.runtime.store, self.backup, pg_restore)
                self._restore_and_check(pg_restore, scratch)

    def _prepare(self) -> tuple[str | None, PgTool]:
        """Credentials, the safety rule and the tools: everything before touching a server. No
        scratch DSN (None) means a throwaway server, which cannot be the source."""
        credentials = self.runtime.credentials
        scratch_dsn: str | None = None
        try:
            if self.verify.standing_scratch:
                scratch_dsn = credentials.dsn(
                    dsn=self.verify.scratch_dsn, secret_name=self.verify.scratch_dsn_secret
                )
                postgres.require_dsn(scratch_dsn, "the scratch DSN")
            source_dsn = credentials.target_dsn(self.target)
            postgres.require_dsn(source_dsn, f"the DSN of target {self.target.name!r}")
        except DrsentryError as exc:
            raise StepFailed(CHECK_RESTORE, f"cannot read the database credentials: {exc}") from exc
        self._dsns = [source_dsn] if scratch_dsn is None else [scratch_dsn, source_dsn]
        if scratch_dsn is not None:
            try:
                refuse_unsafe_scratch(source_dsn, scratch_dsn, self.scratch_db, self.target.name)
            except VerificationRefused as exc:
                raise StepFailed(CHECK_RESTORE, str(exc)) from exc
        return scratch_dsn, restore_tool(self.config.pg_bin_dir, self.backup)

    def _restore_and_check(self, pg_restore: PgTool, scratch: ScratchDatabase) -> None:
        restored_dsn = scratch.dsn
        # Held from creation to the drop, so a concurrent run's leftover cleanup sees it in use.
        holder = connect(restored_dsn, "cannot connect to the new scratch database")
        with holder:
            expected = self._expected()
            roles = bring_roles(
                self.runtime,
                self.backup,
                scratch.server_dsn,
                self.scratch_db,
                throwaway=self.server is not None and self.server.throwaway,
            )
            outcome = self._restore(pg_restore, restored_dsn)
            judge_stream(
                self.checks,
                self.backup,
                outcome,
                self.scratch_db,
                self._clean,
                globals_problem=roles.object_problem,
            )
            if not outcome.restored:
                self.skip_reason = "the restore did not complete"
                return
            checks = RestoredDatabaseChecks(
                self.runtime,
                self.log,
                target=self.target.name,
                verify=self.verify,
                backup=self.backup,
                checks=self.checks,
                time_left=self.time_left,
                database=self.database.name if self.database is not None else None,
            )
            self.runtime.progress.phase(f"verify {self.target.name}: checking the restored database")
            checks_started = time.monotonic()
            checks.run(restored_dsn, expected, roles)
            self.checks_seconds = round(time.monotonic() - checks_started, 3)
            judge_restore_time(self.checks, self.restore_seconds, self.config.rto.total_seconds())
            if self.after_restore is not None:
                self.after_restore(restored_dsn)

    def _restore(self, pg_restore: PgTool, restored_dsn: str) -> RestoreOutcome:
        self.time_left.require(CHECK_RESTORE)
        progress = self.runtime.progress
        restoring = f"verify {self.target.name}: restoring {self.backup.backup_id}"
        progress.phase(restoring, self.backup.size_bytes)
        try:
            outcome = stream_restore(
                self.runtime.store,
                self.backup.bucket,
                self.backup.key,
                restored_dsn,
                pg_restore,
                options=(*RESTORE_OPTIONS, *(self.server.restore_options if self.server else ())),
                session_settings={
                    **SCRATCH_SESSION_SETTINGS,
                    **(self.server.session_settings if self.server else {}),
                },
                remaining_seconds=self.time_left.remaining,
                application_name=APPLICATION_NAME,
                progress=progress,
                # As a real recovery restores: owners and grants kept, so a role the backup cannot
                # bring back fails here. A backup from before roles objects restores as it always did.
                keep_owners=self.backup.globals is not None,
            )
        except StorageError as exc:
            raise StepFailed(CHECK_OBJECT, f"backup object unreadable: {exc}") from exc
        except RestoreTimedOut as exc:
            raise StepFailed(CHECK_RESTORE, str(exc)) from exc
        except DrsentryError as exc:
            raise StepFailed(CHECK_RESTORE, str(exc)) from exc
        self.restore_seconds = outcome.restore_seconds
        if self.server is not None and outcome.restore_error:
            outcome.restore_error = self.server.explain_restore_error(outcome.restore_error)
        return outcome

    def _expected(self) -> Expected:
        try:
            manifest = self.runtime.store.get_json(self.backup.bucket, self.backup.manifest_key)
        except StorageError as exc:
            logger.warning(
                "manifest unreadable; comparing with the catalog record",
                extra={"backup_id": self.backup.backup_id, "error": str(exc)},
            )
            return expected_contents(self.backup, None)
        return expected_contents(self.backup, manifest)
