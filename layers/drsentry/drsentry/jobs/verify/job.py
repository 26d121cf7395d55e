"""Verify: prove a backup restores, and restores to the data it claims to hold.

For each verified backup: stream the object from S3 through a SHA-256 and zstd into
``pg_restore`` on a fresh scratch database (``drsentry_verify_<backup id>``), run the
checks against the restored database, write a VerificationRecord, drop the scratch
database (also when a check fails or time runs out), emit metrics. Per target, the
newest completed backup is verified, plus ``verify.sample_older`` random older ones so
that old backups get read too; one notice per target goes to SNS and Slack.

The checks, in order (critical unless marked):
 1. object checksum       size and SHA-256 of the downloaded bytes equal the catalog's
 2. archive readable      zstd and pg_restore read the archive to its end
 3. restore               pg_restore exits 0 with no error into the scratch database
 4. connectivity          a new session on the restored database answers
 5. critical tables       every `critical_tables` entry exists
 6. row counts            every table's count equals the manifest's (counted in the dump's snapshot)
    row count drift       (warning) counts moved more than `row_count_tolerance` since the
                          previous verified backup
 7. functions             (warning) every `functions` entry exists
 8. row-level security    RLS enabled and at least one policy on every `rls_tables` entry
 9. database size         (warning) the restored database is at least `min_size`
10. schema fingerprint    equals the manifest's
11. assertion: NAME       each user assertion, with its own severity
12. restore time          (warning) download + decompress + pg_restore within the RTO
13. storage: BUCKET       per `storage` bucket of the target: its manifest with this backup against
                          the previous one (a drop beyond `storage_drop_tolerance` fails) and a
                          sample of the previous manifest's keys still there or recoverable
                          (bucket_manifest.py); independent of the restore, so it runs even when
                          the restore failed
A check that cannot run because an earlier step failed is ``skipped`` and says why.

Safety: the scratch server is never the source database, no identifier is spliced into
SQL as text, and user assertions run one statement each in a read-only transaction
with a statement timeout.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drsentry.adapters import pgmeta
from drsentry.adapters.pgtools import PgTool, find_tool, major_version
from drsentry.adapters.restore_stream import (
    RESTORE_SESSION_SETTINGS,
    RestoreOutcome,
    RestoreTimedOut,
    stream_restore,
)
from drsentry.adapters.secrets import redact, same_database, sanitize
from drsentry.adapters.table.verifications import VerificationLog
from drsentry.core import observability
from drsentry.core.config import Assertion, BucketConfig, TargetConfig, VerifyConfig
from drsentry.core.errors import (
    BackupNotFound,
    BadInput,
    CatalogError,
    DrsentryError,
    StorageError,
)
from drsentry.core.events import ScheduledEvent
from drsentry.core.observability import logger
from drsentry.core.records import (
    BackupRecord,
    Check,
    CheckSeverity,
    RunNotice,
    Severity,
    VerificationRecord,
    derive_status,
    iso,
    parse_iso,
)
from drsentry.jobs.runner import RunResult, run_for_targets
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.compare import compare_storage, storage_check_name

SCRATCH_PREFIX = "drsentry_verify_"
APPLICATION_NAME = "drsentry-verify"
# Kept back from Lambda's limit to stop pg_restore, drop the scratch database and write the record.
TIMEOUT_MARGIN_SECONDS = 30.0
ASSERTION_TIMEOUT_SECONDS = 60.0
CONNECT_TIMEOUT_SECONDS = 15
LOCK_TTL_SECONDS = 3 * 3600
# A scratch database this young with nobody connected may be a run between CREATE DATABASE
# and its first session: never a leftover.
LEFTOVER_GRACE = timedelta(minutes=2)
# How far back in the log to look for the previous verified backup (drift baseline).
DRIFT_LOOKBACK = 200
# A scratch server need not have the source's tablespaces or security label providers,
# and a restored subscription must never start pulling from the source's publisher.
RESTORE_OPTIONS = ("--no-tablespaces", "--no-subscriptions", "--no-security-labels")
# The scratch database is dropped after the checks: its commits need not wait for the disk.
SCRATCH_SESSION_SETTINGS = {**RESTORE_SESSION_SETTINGS, "synchronous_commit": "off"}

CHECK_OBJECT = "object checksum"
CHECK_ARCHIVE = "archive readable"
CHECK_RESTORE = "restore"
CHECK_CONNECT = "connectivity"
CHECK_TABLES = "critical tables"
CHECK_ROWS = "row counts"
CHECK_DRIFT = "row count drift"
CHECK_FUNCTIONS = "functions"
CHECK_RLS = "row-level security"
CHECK_SIZE = "database size"
CHECK_FINGERPRINT = "schema fingerprint"
CHECK_RTO = "restore time"
ASSERTION_PREFIX = "assertion: "

NOTHING_TO_VERIFY = "no completed backup to verify"

_COMMENT_RE = re.compile(r"^drsentry verify run \S+ started (\S+)$")


class VerificationRefused(DrsentryError):
    """The scratch server configuration would endanger the source database."""


# Pure rules (unit-tested without a database) ---------------------------------------------


def scratch_database_name(backup_id: str) -> str:
    """`drsentry_verify_20261122t180000z_1a2b3c4d`: unique per backup, a plain identifier."""
    name = SCRATCH_PREFIX + re.sub(r"[^a-z0-9_]", "_", backup_id.lower())
    if len(name.encode()) > 63:
        raise ValueError(f"scratch database name {name!r} is longer than PostgreSQL's 63 bytes")
    return name


def check_plan(verify: VerifyConfig, storage: Sequence[BucketConfig] = ()) -> list[tuple[str, CheckSeverity]]:
    """Every check a verification reports, in order, with its severity."""
    plan: list[tuple[str, CheckSeverity]] = [
        (CHECK_OBJECT, "critical"),
        (CHECK_ARCHIVE, "critical"),
        (CHECK_RESTORE, "critical"),
        (CHECK_CONNECT, "critical"),
        (CHECK_TABLES, "critical"),
        (CHECK_ROWS, "critical"),
        (CHECK_DRIFT, "warning"),
        (CHECK_FUNCTIONS, "warning"),
        (CHECK_RLS, "critical"),
        (CHECK_SIZE, "warning"),
        (CHECK_FINGERPRINT, "critical"),
    ]
    plan += [(name, assertion.severity) for name, assertion in assertion_names(verify.assertions)]
    plan.append((CHECK_RTO, "warning"))
    plan += [(storage_check_name(bucket), "critical") for bucket in storage]
    return plan


def assertion_names(assertions: Sequence[Assertion]) -> list[tuple[str, Assertion]]:
    """`assertion: NAME`, made unique (a second `x` is `x (2)`) so no result hides another."""
    named: list[tuple[str, Assertion]] = []
    seen: dict[str, int] = {}
    for assertion in assertions:
        seen[assertion.name] = seen.get(assertion.name, 0) + 1
        suffix = f" ({seen[assertion.name]})" if seen[assertion.name] > 1 else ""
        named.append((f"{ASSERTION_PREFIX}{assertion.name}{suffix}", assertion))
    return named


def row_count_mismatches(expected: dict[str, int], restored: dict[str, int]) -> list[str]:
    problems = [
        f"{table}: missing (manifest has {count:,} rows)"
        for table, count in expected.items()
        if table not in restored
    ]
    problems += [
        f"{table}: {restored[table]:,} rows, manifest has {count:,}"
        for table, count in expected.items()
        if table in restored and restored[table] != count
    ]
    problems += [
        f"{table}: not in the manifest ({count:,} rows)"
        for table, count in restored.items()
        if table not in expected
    ]
    return problems


def row_count_drift(previous: dict[str, int], current: dict[str, int], tolerance: float) -> list[str]:
    """Tables whose count moved by more than `tolerance` (a fraction) since the previous
    verified backup. A table that vanished counts as -100%; a new table has no baseline."""
    drifted: list[str] = []
    for table, before in sorted(previous.items()):
        after = current.get(table, 0)
        if before == 0:
            if after > 0:
                drifted.append(f"{table}: 0 -> {after:,} rows")
            continue
        change = (after - before) / before
        if abs(change) > tolerance:
            gone = "" if table in current else " (table gone)"
            drifted.append(f"{table}: {before:,} -> {after:,} rows ({change:+.1%}){gone}")
    return drifted


def missing_functions(required: Sequence[str], present: Sequence[str]) -> list[str]:
    """A configured entry matches by full signature (`f(bigint)`) or by name alone (`f`)."""
    names = {signature.split("(", 1)[0] for signature in present}
    return [wanted for wanted in required if wanted not in present and wanted not in names]


def rls_problems(required: Sequence[str], tables: Sequence[pgmeta.RlsTable], existing: set[str]) -> list[str]:
    by_name = {table.table: table for table in tables}
    problems: list[str] = []
    for name in required:
        table = by_name.get(name)
        if name not in existing:
            problems.append(f"{name}: table missing")
        elif table is None or not table.enabled:
            problems.append(f"{name}: row-level security is disabled")
        elif not table.policies:
            problems.append(f"{name}: RLS enabled but no policy (every row is hidden)")
    return problems


def refuse_unsafe_scratch(source_dsn: str, scratch_dsn: str, scratch_db: str, target: str) -> None:
    """The scratch server must never be, or be able to clobber, the source database."""
    if same_database(source_dsn, scratch_dsn):
        raise VerificationRefused(
            f"refused: the scratch DSN {redact(scratch_dsn)} is the source database of target {target!r}; "
            "point verify.scratch_dsn(_secret) at a separate server or database"
        )
    source_db = str(conninfo_to_dict(source_dsn).get("dbname") or "")
    same_server = same_database(make_conninfo(source_dsn, dbname="-"), make_conninfo(scratch_dsn, dbname="-"))
    if same_server and (source_db == scratch_db or source_db.startswith(SCRATCH_PREFIX)):
        raise VerificationRefused(
            f"refused: the source database {source_db!r} of target {target!r} is on the scratch server "
            f"and is named like drsentry's scratch databases ({SCRATCH_PREFIX}...), "
            "which verify creates and drops"
        )


def choose_backups(
    completed: Sequence[BackupRecord], sample_older: int, rng: random.Random | None = None
) -> list[BackupRecord]:
    """The newest completed backup, then `sample_older` distinct random older ones."""
    if not completed:
        return []
    older = list(completed[1:])
    picked = (rng or random.Random()).sample(older, min(sample_older, len(older)))
    return [completed[0], *sorted(picked, key=lambda record: record.backup_id, reverse=True)]


def backup_time(backup_id: str) -> datetime:
    """When a backup started, to the second, from its id (ids begin with the UTC start time)."""
    return datetime.strptime(backup_id[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)


def evaluate_assertion(rows: list[tuple[Any, ...]]) -> str | None:
    """None when the assertion holds, else why not. It must return one row of one boolean."""
    if not rows:
        return "returned no rows (expected one boolean)"
    if len(rows) > 1 or len(rows[0]) != 1:
        return f"returned {len(rows)} row(s) of {len(rows[0])} column(s) (expected one boolean)"
    value = rows[0][0]
    if value is True:
        return None
    if value is False:
        return "returned false"
    if value is None:
        return "returned NULL"
    return f"returned {value!r} (expected a boolean)"


class CheckList:
    """The record's checks in plan order; whatever was never run ends up `skipped`."""

    def __init__(self, plan: list[tuple[str, CheckSeverity]]) -> None:
        self._plan = plan
        self._severity = dict(plan)
        self._results: dict[str, Check] = {}

    def _set(self, name: str, status: str, detail: str) -> None:
        self._results[name] = Check.model_validate(
            {"name": name, "severity": self._severity[name], "status": status, "detail": detail}
        )

    def passed(self, name: str, detail: str) -> None:
        self._set(name, "passed", detail)

    def failed(self, name: str, detail: str) -> None:
        self._set(name, "failed", detail)

    def skipped(self, name: str, detail: str) -> None:
        self._set(name, "skipped", detail)

    def first_pending(self) -> str:
        return next((name for name, _severity in self._plan if name not in self._results), self._plan[-1][0])

    def finish(self, reason: str) -> list[Check]:
        for name, _severity in self._plan:
            if name not in self._results:
                self.skipped(name, f"not run: {reason}")
        return [self._results[name] for name, _severity in self._plan]


# One verification ---------------------------------------------------------------------------


class _StepFailed(Exception):
    """A step failed in a way that stops the run: `check` fails with `detail`, the rest are skipped."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(detail)
        self.check = check
        self.detail = detail


@dataclass
class Expected:
    """What the backup says it holds: from its manifest, or the catalog record as a fallback."""

    tables: dict[str, int]
    schema_fingerprint: str | None
    source: str


class VerificationRun:
    def __init__(
        self,
        runtime: Runtime,
        target_name: str,
        backup: BackupRecord,
        log: VerificationLog,
        after_restore: Callable[[str], None] | None = None,
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
        self.checks = CheckList(check_plan(self.verify, self.target.storage))
        # Called with the restored database's DSN after the checks, before it is dropped (drill smoke checks).
        self.after_restore = after_restore
        self.restore_seconds: float | None = None
        self.run_error: str | None = None
        self.skip_reason = "an earlier step failed"
        self.restored_tables: set[str] = set()
        self._scratch_dsn = ""
        self._dsns: list[str] = []
        self._created = False

    # time ------------------------------------------------------------------------------

    def _remaining(self) -> float | None:
        """Seconds left for work, after the margin kept back for cleanup and the record."""
        remaining = self.runtime.remaining_seconds()
        return None if remaining is None else remaining - TIMEOUT_MARGIN_SECONDS

    def _require_time(self, check: str) -> None:
        remaining = self._remaining()
        if remaining is not None and remaining <= 0:
            raise _StepFailed(check, "timed out: stopped before the function's time limit")

    # the run ---------------------------------------------------------------------------

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
            self._verify()
        except _StepFailed as exc:
            self._stopped(exc.check, exc.detail)
        except (DrsentryError, psycopg.Error, OSError) as exc:
            # Unforeseen, but still a verification that did not complete: record it as such.
            self._stopped(self.checks.first_pending(), f"{type(exc).__name__}: {_first_line(exc)}")
        self._check_storage()
        record = self._record(self.checks.finish(self.skip_reason))
        # Metrics first, and a log that cannot be written does not swallow the finding:
        # the run notice still carries it.
        _emit_metrics(record)
        try:
            self.log.put(record)
        except CatalogError as exc:
            logger.error(
                "verification not recorded", extra={"backup_id": record.backup_id, "error": str(exc)}
            )
            note = f"not recorded in the verification log: {exc}"
            record = record.model_copy(
                update={"error_details": f"{record.error_details}; {note}" if record.error_details else note}
            )
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

    def _stopped(self, check: str, detail: str) -> None:
        detail = self._clean(detail)
        self.checks.failed(check, detail)
        self.run_error = f"{check}: {detail}"
        self.skip_reason = detail

    def _clean(self, text: str) -> str:
        return sanitize(text, *self._dsns)

    def _verify(self) -> None:
        scratch_dsn, pg_restore = self._prepare()
        admin = self._connect(scratch_dsn, "scratch server unreachable")
        try:
            try:
                with admin:
                    self._clean_leftovers(admin)
                    self._create_scratch(admin)
            except psycopg.Error as exc:
                raise _StepFailed(CHECK_RESTORE, f"scratch server: {_first_line(exc)}") from exc
            self._restore_and_check(pg_restore)
        finally:
            # Only a database this run created: an existing one may belong to a concurrent run.
            if self._created:
                self._drop_scratch(scratch_dsn)

    def _prepare(self) -> tuple[str, PgTool]:
        """Credentials, the safety rule and the tools: everything before touching a server."""
        credentials = self.runtime.credentials
        try:
            scratch_dsn = credentials.dsn(
                dsn=self.verify.scratch_dsn, secret_name=self.verify.scratch_dsn_secret
            )
            source_dsn = credentials.dsn(dsn=self.target.dsn, secret_name=self.target.dsn_secret)
        except DrsentryError as exc:
            raise _StepFailed(CHECK_RESTORE, f"cannot read the database credentials: {exc}") from exc
        self._dsns = [scratch_dsn, source_dsn]
        self._scratch_dsn = scratch_dsn
        try:
            refuse_unsafe_scratch(source_dsn, scratch_dsn, self.scratch_db, self.target.name)
        except VerificationRefused as exc:
            raise _StepFailed(CHECK_RESTORE, str(exc)) from exc
        try:
            pg_restore = find_tool("pg_restore", self.config.pg_bin_dir)
        except DrsentryError as exc:
            raise _StepFailed(CHECK_RESTORE, str(exc)) from exc
        dumped_by = self.backup.pg_dump_version
        if dumped_by and pg_restore.major < major_version(dumped_by):
            raise _StepFailed(
                CHECK_RESTORE,
                f"pg_restore {pg_restore.version} ({pg_restore.path}) cannot read an archive written by "
                f"pg_dump {dumped_by}; install pg_restore {major_version(dumped_by)} or newer",
            )
        return scratch_dsn, pg_restore

    def _connect(self, dsn: str, problem: str, check: str = CHECK_RESTORE) -> psycopg.Connection:
        try:
            return psycopg.connect(
                dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=APPLICATION_NAME,
            )
        except psycopg.Error as exc:
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise _StepFailed(check, f"{problem}: {redact(dsn)}: {first_line}") from exc

    # the scratch database --------------------------------------------------------------

    def _clean_leftovers(self, admin: psycopg.Connection) -> None:
        """Drop scratch databases that crashed or timed-out runs left behind; never one in use."""
        now = self.runtime.clock()
        rows = admin.execute(
            """
            select d.datname, shobj_description(d.oid, 'pg_database'),
                   (select count(*) from pg_stat_activity a where a.datname = d.datname)
            from pg_database d
            where d.datname like %s
            """,
            (SCRATCH_PREFIX.replace("_", r"\_") + "%",),
        ).fetchall()
        for name, comment, sessions in rows:
            if sessions:
                continue
            match = _COMMENT_RE.match(comment or "")
            if match and name != self.scratch_db:
                try:
                    if now - parse_iso(match.group(1)) < LEFTOVER_GRACE:
                        continue
                except ValueError:
                    pass  # an unreadable comment is not ours to trust: treat it as old
            logger.warning("dropping leftover scratch database", extra={"database": name})
            try:
                admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
            except psycopg.Error as exc:
                if admin.broken:
                    raise
                # E.g. someone else's database that happens to match: it must not stop this run.
                logger.warning(
                    "cannot drop leftover scratch database",
                    extra={"database": name, "error": _first_line(exc)},
                )

    def _create_scratch(self, admin: psycopg.Connection) -> None:
        name = sql.Identifier(self.scratch_db)
        try:
            # template0: nothing installed in template1 may collide with what the archive creates.
            admin.execute(sql.SQL("create database {} template template0").format(name))
            self._created = True
        except psycopg.errors.DuplicateDatabase as exc:
            raise _StepFailed(
                CHECK_RESTORE,
                f"scratch database {self.scratch_db} exists and is in use: another verification of this "
                "backup is running",
            ) from exc
        except psycopg.Error as exc:
            raise _StepFailed(
                CHECK_RESTORE,
                f"cannot create scratch database {self.scratch_db}: {str(exc).strip().splitlines()[0]}",
            ) from exc
        comment = f"drsentry verify run {self.runtime.run_id} started {iso(self.runtime.clock())}"
        admin.execute(sql.SQL("comment on database {} is {}").format(name, sql.Literal(comment)))

    def _drop_scratch(self, scratch_dsn: str) -> None:
        """Runs whenever this run created the database, whatever happened after; a failure here is
        logged and the next run's leftover cleanup retries."""
        try:
            with psycopg.connect(
                scratch_dsn,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=APPLICATION_NAME,
            ) as admin:
                admin.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(self.scratch_db))
                )
        except psycopg.Error as exc:
            logger.error(
                "could not drop the scratch database; the next run removes it",
                extra={"database": self.scratch_db, "error": self._clean(str(exc).strip())},
            )

    # restore and checks ----------------------------------------------------------------

    def _restore_and_check(self, pg_restore: PgTool) -> None:
        restored_dsn = make_conninfo(self._scratch_dsn, dbname=self.scratch_db)
        # Held from creation to the drop, so a concurrent run's leftover cleanup sees it in use.
        holder = self._connect(restored_dsn, "cannot connect to the new scratch database")
        with holder:
            expected = self._expected()
            outcome = self._restore(pg_restore, restored_dsn)
            self._judge_stream(outcome)
            if not outcome.restored:
                self.skip_reason = "the restore did not complete"
                return
            self._run_database_checks(restored_dsn, expected)
            self._check_restore_time()
            if self.after_restore is not None:
                self.after_restore(restored_dsn)

    def _restore(self, pg_restore: PgTool, restored_dsn: str) -> RestoreOutcome:
        self._require_time(CHECK_RESTORE)
        try:
            outcome = stream_restore(
                self.runtime.store,
                self.backup.bucket,
                self.backup.key,
                restored_dsn,
                pg_restore,
                options=RESTORE_OPTIONS,
                session_settings=SCRATCH_SESSION_SETTINGS,
                remaining_seconds=self._remaining,
                application_name=APPLICATION_NAME,
            )
        except StorageError as exc:
            raise _StepFailed(CHECK_OBJECT, f"backup object unreadable: {exc}") from exc
        except RestoreTimedOut as exc:
            raise _StepFailed(CHECK_RESTORE, str(exc)) from exc
        except DrsentryError as exc:
            raise _StepFailed(CHECK_RESTORE, str(exc)) from exc
        self.restore_seconds = outcome.restore_seconds
        return outcome

    def _judge_stream(self, outcome: RestoreOutcome) -> None:
        backup = self.backup
        where = f"s3://{backup.bucket}/{backup.key}"
        problems = []
        if backup.size_bytes is not None and outcome.size_bytes != backup.size_bytes:
            problems.append(f"size {outcome.size_bytes:,} bytes, catalog says {backup.size_bytes:,}")
        if backup.sha256 is None:
            problems.append("the catalog record has no sha256 to compare with")
        elif outcome.sha256 != backup.sha256:
            problems.append(f"sha256 {outcome.sha256} does not match the catalog's {backup.sha256}")
        if problems:
            self.checks.failed(CHECK_OBJECT, f"{where}: " + "; ".join(problems))
        else:
            self.checks.passed(
                CHECK_OBJECT,
                f"{where}: {outcome.size_bytes:,} bytes, sha256 {outcome.sha256} equals the catalog's",
            )
        if outcome.archive_error:
            self.checks.failed(CHECK_ARCHIVE, self._clean(outcome.archive_error))
        elif outcome.restored:
            self.checks.passed(
                CHECK_ARCHIVE, f"zstd ({outcome.frames} frame(s)) and pg_restore read the archive to its end"
            )
        else:
            # zstd decoded every byte; pg_restore stopped at an SQL error, which `restore` reports.
            self.checks.passed(
                CHECK_ARCHIVE,
                f"zstd decoded the whole stream ({outcome.frames} frame(s)); pg_restore stopped early "
                "at an SQL error (see restore)",
            )
        if outcome.restored:
            warnings = f"; pg_restore warnings: {'; '.join(outcome.warnings)}" if outcome.warnings else ""
            self.checks.passed(
                CHECK_RESTORE, f"restored into {self.scratch_db} in {outcome.restore_seconds:.1f}s{warnings}"
            )
        else:
            self.checks.failed(
                CHECK_RESTORE, self._clean(outcome.restore_error or "pg_restore did not finish")
            )

    def _expected(self) -> Expected:
        try:
            manifest = self.runtime.store.get_json(self.backup.bucket, self.backup.manifest_key)
        except StorageError as exc:
            logger.warning(
                "manifest unreadable; comparing with the catalog record",
                extra={"backup_id": self.backup.backup_id, "error": str(exc)},
            )
            return Expected(dict(self.backup.tables), self.backup.schema_fingerprint, "catalog record")
        tables = manifest.get("tables")
        fingerprint = manifest.get("schema_fingerprint")
        return Expected(
            {str(name): int(count) for name, count in tables.items()}
            if isinstance(tables, dict)
            else dict(self.backup.tables),
            str(fingerprint) if fingerprint else self.backup.schema_fingerprint,
            "manifest",
        )

    def _run_database_checks(self, restored_dsn: str, expected: Expected) -> None:
        self._require_time(CHECK_CONNECT)
        conn = self._connect(restored_dsn, "cannot connect to the restored database", CHECK_CONNECT)
        with conn:
            row = conn.execute("select current_database(), version()").fetchone()
            assert row is not None
            self.checks.passed(CHECK_CONNECT, f"connected to {row[0]}: {str(row[1]).split(',')[0]}")
            # Count every row, as pg_dump saw them: the restoring role owns the tables, so an RLS
            # policy must not filter its counts (with FORCE RLS this errors instead of lying).
            conn.execute("set row_security = off")
            steps: list[tuple[str, Callable[[], None]]] = [
                (CHECK_TABLES, lambda: self._check_critical_tables(conn)),
                (CHECK_ROWS, lambda: self._check_rows(conn, expected)),
                (CHECK_FUNCTIONS, lambda: self._check_functions(conn)),
                (CHECK_RLS, lambda: self._check_rls(conn)),
                (CHECK_SIZE, lambda: self._check_size(conn)),
                (CHECK_FINGERPRINT, lambda: self._check_fingerprint(conn, expected)),
            ]
            for check, step in steps:
                try:
                    self._limit_statements(conn, check)
                    step()
                except psycopg.errors.QueryCanceled as exc:
                    self.checks.failed(
                        check, f"timed out before the function's time limit: {_first_line(exc)}"
                    )
                except psycopg.Error as exc:
                    if conn.broken:
                        raise _StepFailed(check, f"lost the restored database: {_first_line(exc)}") from exc
                    self.checks.failed(check, f"query failed: {_first_line(exc)}")
            self._run_assertions(conn)

    def _limit_statements(self, conn: psycopg.Connection, check: str) -> None:
        """No query may run past the function's time limit: the server cancels it instead."""
        self._require_time(check)
        remaining = self._remaining()
        milliseconds = 0 if remaining is None else max(int(remaining * 1000), 1000)
        conn.execute(sql.SQL("set statement_timeout = {}").format(sql.Literal(milliseconds)))

    def _check_critical_tables(self, conn: psycopg.Connection) -> None:
        self.restored_tables = {
            pgmeta.display_name(schema, name) for schema, name in conn.execute(pgmeta.TABLES_SQL).fetchall()
        }
        missing = [table for table in self.verify.critical_tables if table not in self.restored_tables]
        if missing:
            self.checks.failed(CHECK_TABLES, f"missing: {', '.join(missing)}")
        elif self.verify.critical_tables:
            self.checks.passed(CHECK_TABLES, f"present: {', '.join(self.verify.critical_tables)}")
        else:
            self.checks.skipped(CHECK_TABLES, "no critical_tables configured")

    def _check_rows(self, conn: psycopg.Connection, expected: Expected) -> None:
        restored = pgmeta.count_rows(conn)
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
        for seen, record in enumerate(self.log.iter(self.target.name)):
            if seen >= DRIFT_LOOKBACK:
                break
            if record.status == "failure" or record.backup_id >= self.backup.backup_id:
                continue
            try:
                previous = self.runtime.catalog.get_backup(record.backup_id)
            except BackupNotFound:
                continue  # expired from the catalog; an older verification may still have one
            if previous.tables:
                return previous.backup_id, previous.tables
        return None

    def _check_functions(self, conn: psycopg.Connection) -> None:
        if not self.verify.functions:
            self.checks.skipped(CHECK_FUNCTIONS, "no functions configured")
            return
        missing = missing_functions(self.verify.functions, pgmeta.functions(conn))
        if missing:
            self.checks.failed(CHECK_FUNCTIONS, f"missing: {', '.join(missing)}")
        else:
            self.checks.passed(CHECK_FUNCTIONS, f"present: {', '.join(self.verify.functions)}")

    def _check_rls(self, conn: psycopg.Connection) -> None:
        if not self.verify.rls_tables:
            self.checks.skipped(CHECK_RLS, "no rls_tables configured")
            return
        problems = rls_problems(self.verify.rls_tables, pgmeta.rls_tables(conn), self.restored_tables)
        if problems:
            self.checks.failed(CHECK_RLS, "; ".join(problems))
        else:
            self.checks.passed(CHECK_RLS, f"enabled with policies: {', '.join(self.verify.rls_tables)}")

    def _check_size(self, conn: psycopg.Connection) -> None:
        row = conn.execute("select pg_database_size(current_database())").fetchone()
        assert row is not None
        size = int(row[0])
        minimum = self.verify.min_size
        text = f"{size / 1024**2:,.1f} MB restored, minimum {minimum / 1024**2:,.1f} MB"
        (self.checks.passed if size >= minimum else self.checks.failed)(CHECK_SIZE, text)

    def _check_fingerprint(self, conn: psycopg.Connection, expected: Expected) -> None:
        if not expected.schema_fingerprint:
            self.checks.skipped(CHECK_FINGERPRINT, f"the {expected.source} holds no schema fingerprint")
            return
        restored = pgmeta.schema_fingerprint(conn)
        if restored == expected.schema_fingerprint:
            self.checks.passed(CHECK_FINGERPRINT, f"{restored} equals the {expected.source}'s")
        else:
            self.checks.failed(
                CHECK_FINGERPRINT,
                f"restored {restored} differs from the {expected.source}'s {expected.schema_fingerprint}",
            )

    def _run_assertions(self, conn: psycopg.Connection) -> None:
        for name, assertion in assertion_names(self.verify.assertions):
            self._require_time(name)
            remaining = self._remaining()
            seconds = (
                ASSERTION_TIMEOUT_SECONDS if remaining is None else min(ASSERTION_TIMEOUT_SECONDS, remaining)
            )
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute("set transaction read only")
                    conn.execute(
                        sql.SQL("set local statement_timeout = {}").format(
                            sql.Literal(max(int(seconds * 1000), 1000))
                        )
                    )
                    # Binary results force the extended protocol, which takes exactly one
                    # statement: an assertion cannot `commit;` its way out of read-only.
                    cursor = conn.execute(sql.SQL(assertion.sql), binary=True)
                    rows = cursor.fetchall() if cursor.description else []
            except psycopg.errors.QueryCanceled:
                self.checks.failed(name, f"timed out after {seconds:.0f}s (statement_timeout)")
                continue
            except psycopg.Error as exc:
                if conn.broken:
                    raise _StepFailed(name, f"lost the restored database: {_first_line(exc)}") from exc
                self.checks.failed(name, f"error: {_first_line(exc)}")
                continue
            why_not = evaluate_assertion(rows)
            if why_not is None:
                self.checks.passed(name, "returned true")
            else:
                self.checks.failed(name, why_not)

    def _check_storage(self) -> None:
        """The storage buckets' manifests: they need no restored database, so they run regardless."""
        for bucket in self.target.storage:
            name = storage_check_name(bucket)
            try:
                outcome, detail = compare_storage(
                    self.runtime, self.backup, bucket, self.verify.storage_drop_tolerance
                )
            except DrsentryError as exc:
                outcome, detail = "failed", f"could not compare the manifests: {exc}"
            {"passed": self.checks.passed, "failed": self.checks.failed, "skipped": self.checks.skipped}[
                outcome
            ](name, detail)

    def _check_restore_time(self) -> None:
        rto = self.config.rto.total_seconds()
        seconds = self.restore_seconds or 0.0
        text = f"{seconds:.1f}s, RTO {rto:.0f}s"
        (self.checks.passed if seconds <= rto else self.checks.failed)(CHECK_RTO, text)

    # the record ------------------------------------------------------------------------

    def _record(self, checks: list[Check]) -> VerificationRecord:
        verified = self.runtime.clock()
        age_hours = (verified - self.backup.started).total_seconds() / 3600
        status = "failure" if self.run_error else derive_status(checks)
        failed = [check for check in checks if check.status == "failed"]
        error_details = "; ".join(f"{check.name}: {check.detail}" for check in failed) or None
        return VerificationRecord(
            target=self.target.name,
            backup_id=self.backup.backup_id,
            verified_at=iso(verified),
            backup_age_hours=round(age_hours, 3),
            backup_size_mb=round((self.backup.size_bytes or 0) / 1e6, 3),
            status=status,
            checks_passed=sum(check.status == "passed" for check in checks),
            checks_failed=len(failed),
            restore_seconds=self.restore_seconds,
            checks=checks,
            error_details=error_details,
        )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _emit_metrics(record: VerificationRecord) -> None:
    target = record.target
    observability.put_metric(
        observability.VERIFICATION_SUCCESS, "Count", int(record.status == "success"), target
    )
    observability.put_metric(
        observability.VERIFICATION_WARNING, "Count", int(record.status == "warning"), target
    )
    observability.put_metric(
        observability.VERIFICATION_FAILURE, "Count", int(record.status == "failure"), target
    )
    restored = any(check.name == CHECK_RESTORE and check.status == "passed" for check in record.checks)
    if restored and record.restore_seconds is not None:
        # Only completed restores measure the RTO; a restore that failed early is not fast.
        observability.put_metric(observability.RESTORE_SECONDS, "Seconds", record.restore_seconds, target)


# Entry points ----------------------------------------------------------------------------


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
    try:
        completed = [
            record for record in runtime.catalog.iter_backups(target_name) if record.status == "completed"
        ]
        records = [
            verify_backup(runtime, target_name, backup)
            for backup in choose_backups(completed, target.verify.sample_older)
        ]
    finally:
        runtime.catalog.locks.release(target_name, runtime.run_id, job="verify")
    _emit_rpo_signal(runtime, target_name, records)
    if runtime.notifier is not None:
        notice, failing = notice_for(runtime, target_name, records)
        runtime.notifier.send(notice, failing_checks=failing)
    return records


def _emit_rpo_signal(runtime: Runtime, target_name: str, records: list[VerificationRecord]) -> None:
    """VerifiedBackupAgeSeconds: the age of the newest *verified* backup (the RPO the config means)."""
    newest_good = next((r for r in records if r.status != "failure"), None)
    backup_id = newest_good.backup_id if newest_good else None
    if backup_id is None:
        earlier = next(
            (r for r in runtime.catalog.verifications.iter(target_name) if r.status != "failure"), None
        )
        backup_id = earlier.backup_id if earlier else None
    if backup_id is not None:
        age = (runtime.clock() - backup_time(backup_id)).total_seconds()
        observability.put_metric(
            observability.VERIFIED_BACKUP_AGE_SECONDS, "Seconds", max(age, 0.0), target_name
        )


def notice_for(
    runtime: Runtime, target_name: str, records: list[VerificationRecord]
) -> tuple[RunNotice, list[str]]:
    """One notice per target and run, so the alert state sees one outcome, not one per sample."""
    config = runtime.config
    rpo_hours = config.rpo.total_seconds() / 3600
    rto_seconds = config.rto.total_seconds()
    if not records:
        summary = f"no completed backup of {target_name} to verify"
        notice = RunNotice(
            source="verify",
            target=target_name,
            severity="critical",
            status="failure",
            summary=summary,
            run_id=runtime.run_id,
            details={"rpo_hours": rpo_hours, "rto_seconds": rto_seconds},
        )
        return notice, ["backup exists"]
    newest = records[0]
    statuses = [record.status for record in records]
    status = "failure" if "failure" in statuses else "warning" if "warning" in statuses else "success"
    severity: Severity = "critical" if status == "failure" else "warning" if status == "warning" else "info"
    failing = [check.name for check in newest.failed_checks]
    failing += [f"older backup: {check.name}" for record in records[1:] for check in record.failed_checks]
    if newest.status == "success":
        head = (
            f"backup {newest.backup_id} verified: restored in {newest.restore_seconds or 0:.1f}s "
            f"(RTO {rto_seconds:.0f}s), {newest.checks_passed} checks passed"
        )
    else:
        head = f"backup {newest.backup_id} verification {newest.status}: {newest.error_details}"
    older_failed = [r.backup_id for r in records[1:] if r.status != "success"]
    if older_failed:
        head += f"; older backup(s) not clean: {', '.join(older_failed)}"
    details = {
        "backup_id": newest.backup_id,
        "verification_id": newest.id,
        "backup_age_hours": newest.backup_age_hours,
        "rpo_hours": rpo_hours,
        "restore_seconds": newest.restore_seconds,
        "rto_seconds": rto_seconds,
        "checks_passed": newest.checks_passed,
        "checks_failed": newest.checks_failed,
        "failing_checks": sorted(set(failing)),
        "older": [{"backup_id": r.backup_id, "status": r.status} for r in records[1:]],
    }
    notice = RunNotice(
        source="verify",
        target=target_name,
        severity=severity,
        status=status,
        summary=head,
        details=details,
        run_id=runtime.run_id,
    )
    return notice, sorted(set(failing))


class VerifyRunResult(RunResult[VerificationRecord]):
    records_key: ClassVar[str] = "verifications"

    @property
    def no_backup(self) -> list[str]:
        """Targets that had no completed backup to verify (verify_target alerted on them)."""
        verified = {record.target for record in self.records}
        return [outcome.target for outcome in self.targets("ran") if outcome.target not in verified]

    def document(self) -> dict[str, Any]:
        # `unverified`, as scripts read it before: every target this run leaves without a verification.
        unverified = [{"target": o.target, "reason": o.reason} for o in self.not_run] + [
            {"target": name, "reason": NOTHING_TO_VERIFY} for name in self.no_backup
        ]
        return {**super().document(), "unverified": unverified}


def no_verify_section(target: TargetConfig) -> str | None:
    if target.verify is None:
        return f"target {target.name!r} has no verify section in the configuration"
    return None


def run_scheduled_verify(runtime: Runtime, scheduled: ScheduledEvent) -> VerifyRunResult:
    """The verify function's whole job for one scheduled event (Lambda and CLI alike)."""
    return run_for_targets(
        runtime,
        "verify",
        scheduled,
        lambda target: verify_target(runtime, target.name),
        result_type=VerifyRunResult,
        not_configured=no_verify_section,
    )
