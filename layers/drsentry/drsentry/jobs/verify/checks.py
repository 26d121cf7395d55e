"""The checks that read something: the restored database (connectivity, critical tables, row
counts and their drift, functions, row-level security, size, schema fingerprint, roles and
grants, the user's assertions) through one session, and the storage buckets' manifests.

No query may outlive the function's time: before each check the session's statement_timeout
is set to the time left, so the server cancels a slow count instead of Lambda killing the run.
A check whose query fails is failed and the next one runs; a lost session stops the run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from drsentry.adapters import postgres
from drsentry.adapters.table.verifications import VerificationLog
from drsentry.core.config import BucketConfig, VerifyConfig
from drsentry.core.errors import (
    BackupNotFound,
    ConnectionLost,
    DrsentryError,
    PostgresError,
    StatementTimedOut,
)
from drsentry.core.records import BackupRecord
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.compare import compare_storage, storage_check_name
from drsentry.jobs.verify.rules import (
    CHECK_CONNECT,
    CHECK_DRIFT,
    CHECK_FINGERPRINT,
    CHECK_FUNCTIONS,
    CHECK_RLS,
    CHECK_ROLES,
    CHECK_ROWS,
    CHECK_SIZE,
    CHECK_TABLES,
    CheckList,
    Expected,
    RolesRestored,
    StepFailed,
    TimeLeft,
    assertion_names,
    evaluate_assertion,
    judge_roles,
    missing_functions,
    rls_problems,
    row_count_drift,
    row_count_mismatches,
)
from drsentry.jobs.verify.scratch import connect

ASSERTION_TIMEOUT_SECONDS = 60.0
# How far back in the log to look for the previous verified backup (drift baseline).
DRIFT_LOOKBACK = 200


class RestoredDatabaseChecks:
    """The checks on one restored database, recorded into `checks`."""

    def __init__(
        self,
        runtime: Runtime,
        log: VerificationLog,
        *,
        target: str,
        verify: VerifyConfig,
        backup: BackupRecord,
        checks: CheckList,
        time_left: TimeLeft,
        database: str | None = None,
    ) -> None:
        self.runtime = runtime
        # The database of a backup of several that `backup` is the view of (None: the only one).
        self.database = database
        self.log = log
        self.target = target
        self.verify = verify
        self.backup = backup
        self.checks = checks
        self.time_left = time_left
        self.restored_tables: set[str] = set()

    def run(self, restored_dsn: str, expected: Expected, roles: RolesRestored) -> None:
        self.time_left.require(CHECK_CONNECT)
        session = connect(restored_dsn, "cannot connect to the restored database", CHECK_CONNECT)
        with session:
            database, version = session.database_and_version()
            self.checks.passed(CHECK_CONNECT, f"connected to {database}: {version.split(',')[0]}")
            # Count every row, as pg_dump saw them: the restoring role owns the tables, so an RLS
            # policy must not filter its counts (with FORCE RLS this errors instead of lying).
            session.without_row_security()
            steps: list[tuple[str, Callable[[], None]]] = [
                (CHECK_TABLES, lambda: self._check_critical_tables(session)),
                (CHECK_ROWS, lambda: self._check_rows(session, expected)),
                (CHECK_FUNCTIONS, lambda: self._check_functions(session)),
                (CHECK_RLS, lambda: self._check_rls(session)),
                (CHECK_SIZE, lambda: self._check_size(session)),
                (CHECK_FINGERPRINT, lambda: self._check_fingerprint(session, expected)),
                (CHECK_ROLES, lambda: self._check_roles(session, expected, roles)),
            ]
            for check, step in steps:
                try:
                    self._limit_statements(session, check)
                    step()
                except StatementTimedOut as exc:
                    self.checks.failed(check, f"timed out before the function's time limit: {exc}")
                except ConnectionLost as exc:
                    raise StepFailed(check, f"lost the restored database: {exc}") from exc
                except PostgresError as exc:
                    self.checks.failed(check, f"query failed: {exc}")
            self._run_assertions(session)

    def _limit_statements(self, session: postgres.Session, check: str) -> None:
        """No query may run past the function's time limit: the server cancels it instead."""
        self.time_left.require(check)
        session.limit_statements(self.time_left.remaining())

    def _check_critical_tables(self, session: postgres.Session) -> None:
        self.restored_tables = session.table_names()
        missing = [table for table in self.verify.critical_tables if table not in self.restored_tables]
        if missing:
            self.checks.failed(CHECK_TABLES, f"missing: {', '.join(missing)}")
        elif self.verify.critical_tables:
            self.checks.passed(CHECK_TABLES, f"present: {', '.join(self.verify.critical_tables)}")
        else:
            self.checks.skipped(CHECK_TABLES, "no critical_tables configured")

    def _check_rows(self, session: postgres.Session, expected: Expected) -> None:
        restored = session.count_rows()
        mismatches = row_count_mismatches(expected.tables, restored)
        if mismatches:
            self.checks.failed(
                CHECK_ROWS,
                f"differ from the {expected.source}: "
                + "; ".join(mismatches[:10])
                + (f" (and {len(mismatches) - 10} more)" if len(mismatches) > 10 else ""),
            )
        else:
            total = sum(restored.values())
            self.checks.passed(
                CHECK_ROWS,
                f"{len(restored)} tables, {total:,} rows, every count equals the {expected.source}'s",
            )
        self._check_drift(restored)

    def _check_drift(self, restored: dict[str, int]) -> None:
        baseline = self._previous_verified_counts()
        if baseline is None:
            self.checks.skipped(CHECK_DRIFT, "no earlier verified backup to compare with")
            return
        previous_id, previous_counts = baseline
        drifted = row_count_drift(previous_counts, restored, self.verify.row_count_tolerance)
        tolerance = f"±{self.verify.row_count_tolerance:.0%}"
        if drifted:
            self.checks.failed(
                CHECK_DRIFT,
                f"moved more than {tolerance} since verified backup {previous_id}: "
                + "; ".join(drifted[:10]),
            )
        else:
            self.checks.passed(
                CHECK_DRIFT, f"every table within {tolerance} of verified backup {previous_id}"
            )

    def _previous_verified_counts(self) -> tuple[str, dict[str, int]] | None:
        """Counts of the newest older backup whose verification succeeded (or only warned)."""
        for seen, record in enumerate(self.log.iter(self.target)):
            if seen >= DRIFT_LOOKBACK:
                break
            if record.status == "failure" or record.backup_id >= self.backup.backup_id:
                continue
            try:
                previous = self.runtime.catalog.get_backup(record.backup_id)
            except BackupNotFound:
                continue  # expired from the catalog; an older verification may still have one
            if self.database is not None:
                if self.database not in previous.database_names:
                    continue  # that backup did not hold this database
                previous = previous.for_database(self.database)
            if previous.tables:
                return previous.backup_id, previous.tables
        return None

    def _check_functions(self, session: postgres.Session) -> None:
        if not self.verify.functions:
            self.checks.skipped(CHECK_FUNCTIONS, "no functions configured")
            return
        missing = missing_functions(self.verify.functions, session.functions())
        if missing:
            self.checks.failed(CHECK_FUNCTIONS, f"missing: {', '.join(missing)}")
        else:
            self.checks.passed(CHECK_FUNCTIONS, f"present: {', '.join(self.verify.functions)}")

    def _check_rls(self, session: postgres.Session) -> None:
        if not self.verify.rls_tables:
            self.checks.skipped(CHECK_RLS, "no rls_tables configured")
            return
        problems = rls_problems(self.verify.rls_tables, session.rls_tables(), self.restored_tables)
        if problems:
            self.checks.failed(CHECK_RLS, "; ".join(problems))
        else:
            self.checks.passed(CHECK_RLS, f"enabled with policies: {', '.join(self.verify.rls_tables)}")

    def _check_size(self, session: postgres.Session) -> None:
        size = session.database_size()
        minimum = self.verify.min_size
        text = f"{size / 1024**2:,.1f} MB restored, minimum {minimum / 1024**2:,.1f} MB"
        (self.checks.passed if size >= minimum else self.checks.failed)(CHECK_SIZE, text)

    def _check_fingerprint(self, session: postgres.Session, expected: Expected) -> None:
        if not expected.schema_fingerprint:
            self.checks.skipped(CHECK_FINGERPRINT, f"the {expected.source} holds no schema fingerprint")
            return
        restored = session.schema_fingerprint()
        if restored == expected.schema_fingerprint:
            self.checks.passed(CHECK_FINGERPRINT, f"{restored} equals the {expected.source}'s")
        else:
            self.checks.failed(
                CHECK_FINGERPRINT,
                f"restored {restored} differs from the {expected.source}'s {expected.schema_fingerprint}",
            )

    def _check_roles(self, session: postgres.Session, expected: Expected, roles: RolesRestored) -> None:
        if self.backup.globals is None:
            judge_roles(self.checks, self.backup, roles, present=set(), expected=expected, restored_acl={})
            return
        judge_roles(
            self.checks,
            self.backup,
            roles,
            present=session.role_names(),
            expected=expected,
            restored_acl=session.relation_acls(),
        )

    def _run_assertions(self, session: postgres.Session) -> None:
        """Each user assertion: one statement, read-only, rolled back, under a statement timeout."""
        for name, assertion in assertion_names(self.verify.assertions):
            self.time_left.require(name)
            remaining = self.time_left.remaining()
            seconds = (
                ASSERTION_TIMEOUT_SECONDS if remaining is None else min(ASSERTION_TIMEOUT_SECONDS, remaining)
            )
            try:
                rows = session.read_only(assertion.sql, seconds)
            except StatementTimedOut:
                self.checks.failed(name, f"timed out after {seconds:.0f}s (statement_timeout)")
                continue
            except ConnectionLost as exc:
                raise StepFailed(name, f"lost the restored database: {exc}") from exc
            except PostgresError as exc:
                self.checks.failed(name, f"error: {exc}")
                continue
            why_not = evaluate_assertion(rows)
            if why_not is None:
                self.checks.passed(name, "returned true")
            else:
                self.checks.failed(name, why_not)


def check_storage(
    runtime: Runtime,
    backup: BackupRecord,
    buckets: Sequence[BucketConfig],
    drop_tolerance: float,
    checks: CheckList,
) -> None:
    """The storage buckets' manifests: they need no restored database, so they run regardless."""
    for bucket in buckets:
        name = storage_check_name(bucket)
        try:
            outcome, detail = compare_storage(runtime, backup, bucket, drop_tolerance)
        except DrsentryError as exc:
            outcome, detail = "failed", f"could not compare the manifests: {exc}"
        {"passed": checks.passed, "failed": checks.failed, "skipped": checks.skipped}[outcome](name, detail)
