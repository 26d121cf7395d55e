"""Verify's pure rules: the check plan and every judgement that needs no database or bucket.

What to verify, the scratch database's name and the safety rule that keeps it off the source,
how row counts, drift, functions, RLS, an assertion's rows, the restore stream and the restore
time are judged, the `CheckList` that keeps the record's checks in plan order, and how a step
stops the run (`StepFailed`, `TimeLeft`). Unit-tested without PostgreSQL or AWS
(tests/unit/test_verify_rules.py).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drsentry.adapters import pgmeta
from drsentry.adapters.restore_stream import RestoreOutcome
from drsentry.adapters.secrets import conninfo_to_dict, make_conninfo, redact, same_database
from drsentry.core.config import Assertion, BucketConfig, VerifyConfig
from drsentry.core.deadlines import Remaining
from drsentry.core.errors import DrsentryError
from drsentry.core.records import BackupRecord, Check, CheckSeverity
from drsentry.jobs.storage_manifest.compare import storage_check_name

SCRATCH_PREFIX = "drsentry_verify_"
# Kept back from Lambda's limit to stop pg_restore, drop the scratch database and write the record.
TIMEOUT_MARGIN_SECONDS = 30.0

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
CHECK_ROLES = "roles and grants"
CHECK_RTO = "restore time"
ASSERTION_PREFIX = "assertion: "


class VerificationRefused(DrsentryError):
    """The scratch server configuration would endanger the source database."""


class StepFailed(Exception):
    """A step failed in a way that stops the run: `check` fails with `detail`, the rest are skipped."""

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(detail)
        self.check = check
        self.detail = detail


def scratch_database_name(backup_id: str, database_index: int | None = None) -> str:
    """`drsentry_verify_20261122t180000z_1a2b3c4d`: unique per backup, a plain identifier; the
    n-th database of a backup of several gets `_d{n}` (its index, as its name may be anything)."""
    name = SCRATCH_PREFIX + re.sub(r"[^a-z0-9_]", "_", backup_id.lower())
    if database_index is not None:
        name += f"_d{database_index}"
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
        (CHECK_ROLES, "critical"),
    ]
    plan += [(name, assertion.severity) for name, assertion in assertion_names(verify.assertions)]
    plan.append((CHECK_RTO, "warning"))
    plan += [(storage_check_name(bucket), "critical") for bucket in storage]
    return plan


def verify_for_database(verify: VerifyConfig, database: str, databases: Sequence[str]) -> VerifyConfig:
    """The checks of `verify` that apply to `database` of a backup of several (`databases`, in
    order): an entry of critical_tables, functions or rls_tables written `DB.NAME` with DB one of
    the backup's databases applies to DB (as NAME); any other entry, an assertion without
    `database`, and min_size apply to the first database."""
    first = database == databases[0]

    def entries(configured: Sequence[str]) -> list[str]:
        mine: list[str] = []
        for entry in configured:
            head, dot, rest = entry.partition(".")
            if dot and head in databases:
                if head == database:
                    mine.append(rest)
            elif first:
                mine.append(entry)
        return mine

    return verify.model_copy(
        update={
            "critical_tables": entries(verify.critical_tables),
            "functions": entries(verify.functions),
            "rls_tables": entries(verify.rls_tables),
            "assertions": [
                assertion
                for assertion in verify.assertions
                if assertion.database == database or (assertion.database is None and first)
            ],
            "min_size": verify.min_size if first else 0,
        }
    )


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


class TimeLeft:
    """The seconds a verification may still work: the run's remaining time less the margin
    kept back for cleanup and the record."""

    def __init__(self, remaining_seconds: Remaining) -> None:
        self._remaining_seconds = remaining_seconds

    def remaining(self) -> float | None:
        remaining = self._remaining_seconds()
        return None if remaining is None else remaining - TIMEOUT_MARGIN_SECONDS

    def require(self, check: str) -> None:
        remaining = self.remaining()
        if remaining is not None and remaining <= 0:
            raise StepFailed(check, "timed out: stopped before the function's time limit")


@dataclass
class Expected:
    """What the backup says it holds: from its manifest, or the catalog record as a fallback."""

    tables: dict[str, int]
    schema_fingerprint: str | None
    source: str
    # Owner and grants of every relation (the manifest's `acl`); None when it holds none.
    acl: dict[str, pgmeta.RelationAcl] | None = None


def expected_contents(backup: BackupRecord, manifest: dict[str, Any] | None) -> Expected:
    """The manifest's tables and fingerprint, each falling back to the catalog record's;
    the catalog record alone when the manifest could not be read (None)."""
    if manifest is None:
        return Expected(dict(backup.tables), backup.schema_fingerprint, "catalog record")
    tables = manifest.get("tables")
    fingerprint = manifest.get("schema_fingerprint")
    acl = manifest.get("acl")
    return Expected(
        {str(name): int(count) for name, count in tables.items()}
        if isinstance(tables, dict)
        else dict(backup.tables),
        str(fingerprint) if fingerprint else backup.schema_fingerprint,
        "manifest",
        {
            str(name): pgmeta.RelationAcl(str(entry["owner"]), tuple(str(g) for g in entry["grants"]))
            for name, entry in acl.items()
        }
        if isinstance(acl, dict)
        else None,
    )


def globals_problem(backup: BackupRecord, found: tuple[int, str] | None) -> str | None:
    """What is wrong with the backup's roles object, `found` as (size, SHA-256 of its bytes) or
    None when it is not there; None when nothing is (or the backup predates roles objects)."""
    expected = backup.globals
    if expected is None:
        return None
    where = f"roles object s3://{backup.bucket}/{expected.key}"
    if found is None:
        return f"{where} is missing"
    size, sha256 = found
    if size != expected.size_bytes or sha256 != expected.sha256:
        return f"{where}: sha256 {sha256} ({size:,} bytes) does not match the catalog's {expected.sha256}"
    return None


def judge_stream(
    checks: CheckList,
    backup: BackupRecord,
    outcome: RestoreOutcome,
    scratch_db: str,
    clean: Callable[[str], str],
    *,
    globals_problem: str | None = None,
) -> None:
    """The object checksum (the dump's and the roles object's), archive and restore checks,
    from one pass over the object; `clean` takes passwords out of pg_restore's words."""
    where = f"s3://{backup.bucket}/{backup.key}"
    problems = []
    if backup.size_bytes is not None and outcome.size_bytes != backup.size_bytes:
        problems.append(f"size {outcome.size_bytes:,} bytes, catalog says {backup.size_bytes:,}")
    if backup.sha256 is None:
        problems.append("the catalog record has no sha256 to compare with")
    elif outcome.sha256 != backup.sha256:
        problems.append(f"sha256 {outcome.sha256} does not match the catalog's {backup.sha256}")
    if globals_problem:
        problems.append(globals_problem)
    if problems:
        checks.failed(CHECK_OBJECT, f"{where}: " + "; ".join(problems))
    else:
        checks.passed(
            CHECK_OBJECT,
            f"{where}: {outcome.size_bytes:,} bytes, sha256 {outcome.sha256} equals the catalog's"
            + ("; the roles object's too" if backup.globals is not None else ""),
        )
    if outcome.archive_error:
        checks.failed(CHECK_ARCHIVE, clean(outcome.archive_error))
    elif outcome.restored:
        checks.passed(
            CHECK_ARCHIVE, f"zstd ({outcome.frames} frame(s)) and pg_restore read the archive to its end"
        )
    else:
        # zstd decoded every byte; pg_restore stopped at an SQL error, which `restore` reports.
        checks.passed(
            CHECK_ARCHIVE,
            f"zstd decoded the whole stream ({outcome.frames} frame(s)); pg_restore stopped early "
            "at an SQL error (see restore)",
        )
    if outcome.restored:
        warnings = f"; pg_restore warnings: {'; '.join(outcome.warnings)}" if outcome.warnings else ""
        checks.passed(
            CHECK_RESTORE, f"restored into {scratch_db} in {outcome.restore_seconds:.1f}s{warnings}"
        )
    else:
        checks.failed(CHECK_RESTORE, clean(outcome.restore_error or "pg_restore did not finish"))


def judge_restore_time(checks: CheckList, restore_seconds: float | None, rto_seconds: float) -> None:
    seconds = restore_seconds or 0.0
    text = f"{seconds:.1f}s, RTO {rto_seconds:.0f}s"
    (checks.passed if seconds <= rto_seconds else checks.failed)(CHECK_RTO, text)


@dataclass
class RolesRestored:
    """What the verification did with the backup's roles before pg_restore."""

    # The roles object missing, unreadable or not the record's bytes (the object checksum fails too).
    object_problem: str | None = None
    # Roles the database references that the roles object does not define: a blank server
    # could not restore the backup, whatever the scratch server happens to have.
    not_in_globals: list[str] = field(default_factory=list)
    # Created on the scratch server from the roles object for this run.
    created: list[str] = field(default_factory=list)
    # On a throwaway server they go with the server; on a standing one they stay.
    throwaway_server: bool = False


def acl_differences(
    expected: dict[str, pgmeta.RelationAcl], restored: dict[str, pgmeta.RelationAcl]
) -> list[str]:
    """Each relation whose owner or grants differ between the manifest and the restored database."""
    differences: list[str] = []
    for name, wanted in sorted(expected.items()):
        found = restored.get(name)
        if found is None:
            differences.append(f"{name}: missing (manifest: owner {wanted.owner})")
            continue
        if found.owner != wanted.owner:
            differences.append(f"{name}: owner {found.owner}, manifest has {wanted.owner}")
        if found.grants != wanted.grants:
            differences.append(
                f"{name}: grants {' '.join(found.grants) or '(none)'}, "
                f"manifest has {' '.join(wanted.grants) or '(none)'}"
            )
    differences += [
        f"{name}: not in the manifest (owner {found.owner})"
        for name, found in sorted(restored.items())
        if name not in expected
    ]
    return differences


def _first(problems: list[str], shown: int = 5) -> str:
    more = f" (and {len(problems) - shown} more)" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


def judge_roles(
    checks: CheckList,
    backup: BackupRecord,
    roles: RolesRestored,
    *,
    present: set[str],
    expected: Expected,
    restored_acl: dict[str, pgmeta.RelationAcl],
) -> None:
    """`roles and grants`: every role the database references exists after the restore, the roles
    object defines them all, and every relation's owner and grants equal the manifest's."""
    if backup.globals is None:
        checks.skipped(
            CHECK_ROLES,
            "the backup predates roles objects: restored without owners and grants "
            "(--no-owner --no-privileges), nothing to compare",
        )
        return
    needed = backup.globals.roles
    problems: list[str] = []
    if roles.object_problem:
        problems.append(f"the roles object could not be used ({roles.object_problem})")
    if roles.not_in_globals:
        problems.append(
            f"roles {', '.join(roles.not_in_globals)} are referenced by the database but not in the "
            "backup's roles object: a blank server could not restore this backup"
        )
    absent = sorted(set(needed) - present)
    if absent:
        problems.append(f"roles missing after the restore: {', '.join(absent)}")
    if expected.acl is None:
        compared = f"the {expected.source} holds no owners and grants to compare"
    else:
        differences = acl_differences(expected.acl, restored_acl)
        if differences:
            problems.append(f"owners and grants differ from the {expected.source}'s: {_first(differences)}")
        compared = f"owners and grants of {len(expected.acl)} relation(s) equal the {expected.source}'s"
    if problems:
        checks.failed(CHECK_ROLES, "; ".join(problems))
        return
    kept = (
        "removed with the throwaway server"
        if roles.throwaway_server
        else "they stay there: roles belong to the whole server, not to the scratch database"
    )
    created = (
        f"{', '.join(roles.created)} created on the scratch server from the roles object ({kept})"
        if roles.created
        else "none had to be created on the scratch server"
    )
    checks.passed(
        CHECK_ROLES, f"{len(needed)} role(s) the database references present ({created}); {compared}"
    )
