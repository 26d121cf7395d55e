"""`drsentry restore`: a real recovery of one backup into a database the operator names.

`plan_recovery` reads and refuses before anything is touched: a malformed or unknown
backup id, a failed or expired backup, a DSN that names a configured source database
(unless the operator says so), a target database that is not empty (unless ``clean``), a
pg_restore too old for the archive. `execute_recovery` then restores and reports the row
counts of what came back.

No restore ever commits bytes whose SHA-256 differs from the catalog's:
- stream (a whole backup, the default): S3 -> SHA-256 -> zstd -> ``pg_restore
  --single-transaction`` on stdin; the last MiB of the object is held back until size and
  SHA-256 equal the catalog's, so on a mismatch pg_restore is stopped before it can
  commit (a whole restore needs every byte of the archive before it finishes);
- file (``--table`` or ``--jobs``): the object is downloaded, checked and decompressed to
  a temporary file first; pg_restore starts only once the SHA-256 matched. A table restore
  may finish before the end of the archive, so it cannot rely on the held-back tail, and
  ``pg_restore --jobs`` needs a file it can seek in anyway.

A masked restore (``--mask``) restores into a private database on the target server
(CONNECT revoked from PUBLIC), masks and proves the masking there, and only then renames
it to the target's name: unmasked rows are never in a database the staging app can open.
With smoke checks (``--smoke``), the target's ``smoke`` checks run once the rows are counted:
HTTP checks against the application, SQL checks against the restored database.
Archived backups (the primary copy expired) are read from the archive bucket once S3 has
restored them; until then the operator gets jobs/archive/access.py's message, never InvalidObjectState.
"""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import psycopg
import zstandard
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drsentry.adapters import pgmeta, postgres
from drsentry.adapters.buckets import DOWNLOAD_CHUNK, MiB, ObjectStore
from drsentry.adapters.pgtools import PgTool, find_tool, major_version, pg_environment
from drsentry.adapters.restore_stream import RestoreFailed, stream_restore
from drsentry.adapters.secrets import redact, same_database, sanitize
from drsentry.core.config import SmokeCheck
from drsentry.core.errors import (
    BadInput,
    CredentialsError,
    DrsentryError,
    ObjectArchived,
    PgToolsError,
    StorageError,
)
from drsentry.core.gfs import is_archived
from drsentry.core.globals import GlobalsUnreadable, RoleCreation, parse_globals
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, VerificationRecord, check_backup_id
from drsentry.jobs.archive.access import (
    ArchiveAccess,
    ArchiveNotReadable,
    archive_readable,
    explain_unreadable,
    request_archive_restore,
)
from drsentry.jobs.roles import RolesObjectMismatch, read_roles_object, roles_on_server
from drsentry.jobs.runtime import Runtime
from drsentry.operator.archive_schema import (
    SCHEMA_CHUNK_BYTES,
    SchemaUnreadable,
    read_listing,
    read_table_columns,
)
from drsentry.operator.masking import MaskingReport, MaskingRules, apply_masking
from drsentry.operator.restore_selection import Selection, parse_listing, select_entries
from drsentry.operator.smoke import SmokeResult, run_smoke_checks, smoke_failures

APPLICATION_NAME = "drsentry-restore"
CONNECT_TIMEOUT_SECONDS = 15
# More than a few zstd blocks (128 KiB each at most), so the held-back part always decodes to
# the archive's last bytes, which a whole pg_restore must read before it can commit.
HOLD_BACK_BYTES = 1 * MiB
MASK_PREFIX = "drsentry_mask_"
MAINTENANCE_DATABASES = ("postgres", "template1")
# How far back in the verification log to look for this backup's newest verification.
VERIFICATION_LOOKBACK = 500
STDERR_LIMIT = 64 * 1024

Mode = Literal["stream", "file"]


class ChecksumMismatch(RestoreFailed):
    """The downloaded object is not the backup the catalog describes."""


class RecoveryProgress(Protocol):
    """How a long restore reports itself (the CLI draws a progress bar from it)."""

    def start(self, description: str, total_bytes: int | None) -> None: ...

    def advance(self, size: int) -> None: ...

    def phase(self, description: str) -> None: ...


class NoProgress:
    def start(self, description: str, total_bytes: int | None) -> None:
        pass

    def advance(self, size: int) -> None:
        pass

    def phase(self, description: str) -> None:
        pass


@dataclass
class TargetDatabase:
    dsn: str
    dbname: str
    exists: bool
    server_version: str | None = None
    # kind -> count of user objects (tables, views, sequences, functions, schemas)
    objects: dict[str, int] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return redact(self.dsn)

    @property
    def empty(self) -> bool:
        return not any(self.objects.values())

    def describe_objects(self) -> str:
        return ", ".join(f"{count} {kind}" for kind, count in self.objects.items() if count) or "empty"


@dataclass(frozen=True)
class ObjectSource:
    bucket: str
    key: str
    description: str
    archive: ArchiveAccess | None = None

    @property
    def readable(self) -> bool:
        return self.archive is None or self.archive.state == "readable"


@dataclass
class RecoveryPlan:
    backup: BackupRecord
    source: ObjectSource
    target: TargetDatabase
    tables: tuple[str, ...]
    clean: bool
    jobs: int | None
    mask: MaskingRules | None
    pg_restore: PgTool
    backup_age_seconds: float
    verification: VerificationRecord | None
    source_database_of: str | None = None
    notes: list[str] = field(default_factory=list)
    schemas: tuple[str, ...] = ()
    # False with --no-owner: everything owned by the restoring user, no grants.
    keep_owners: bool = True
    # The roles to create before pg_restore (None: no globals, or --no-owner).
    roles: RoleCreation | None = None
    # The archive entries of a partial restore (--table / --schema).
    selection: Selection | None = None

    @property
    def partial(self) -> bool:
        return bool(self.tables or self.schemas)

    @property
    def mode(self) -> Mode:
        return "file" if self.jobs or self.partial else "stream"

    @property
    def restored_tables(self) -> list[str]:
        if self.selection is not None:
            return [pgmeta.display_name(schema, name) for schema, name in self.selection.tables]
        return list(self.tables) if self.tables else sorted(self.backup.tables)

    def actions(self) -> list[str]:
        """What will happen, in order, in the operator's words."""
        steps: list[str] = []
        if not self.source.readable and self.source.archive is not None:
            if self.source.archive.state == "archived":
                steps.append("request an S3 restore of the archive copy (it is not readable yet), then stop")
            else:
                steps.append("stop: the S3 restore of the archive copy is still running")
            return steps
        target_name = self.target.dbname
        if self.mask is not None:
            steps.append("create a private database on the target server, CONNECT revoked from PUBLIC")
        elif not self.target.exists:
            steps.append(f"create database {target_name}")
        if self.roles is not None and self.roles.created:
            steps.append(
                f"create {len(self.roles.created)} role(s) from the backup's globals, in one transaction: "
                f"{', '.join(self.roles.created)}"
            )
        what = (
            f"table(s) {', '.join(self.restored_tables)}"
            if self.partial
            else f"all {len(self.backup.tables)} tables"
        )
        how = (
            f"download, check SHA-256 and decompress to a temporary file, then pg_restore --jobs {self.jobs}"
            if self.jobs
            else "download and check SHA-256 into a temporary file, then pg_restore in one transaction"
            if self.partial
            else "stream into pg_restore in one transaction; commit only once the SHA-256 matched"
        )
        steps.append(f"restore {what}: {how}")
        steps.append(
            "keep owners, grants, policies and default privileges as in the backup"
            if self.keep_owners
            else "--no-owner: everything owned by the restoring user, no grants"
        )
        if self.clean and not self.mask:
            steps.append(
                "--clean: drop each object of the backup before recreating it (others are left alone)"
            )
        if self.mask is not None:
            steps.append(
                f"mask {len(self.mask.tables)} table(s) with {self.mask.source}, "
                "prove that no original value survives"
            )
            if self.target.exists:
                steps.append(f"drop database {target_name} and rename the masked database to {target_name}")
            else:
                steps.append(f"rename the masked database to {target_name}")
        steps.append("count the rows of every restored table and compare them with the backup's")
        return steps


@dataclass
class TableCount:
    table: str
    expected: int | None
    restored: int | None
    note: str = ""

    @property
    def matches(self) -> bool:
        return self.note != "" or self.expected == self.restored


@dataclass
class RecoveryResult:
    plan: RecoveryPlan
    size_bytes: int
    sha256: str
    restore_seconds: float
    total_seconds: float
    counts: list[TableCount]
    masking: MaskingReport | None = None
    warnings: list[str] = field(default_factory=list)
    smoke: list[SmokeResult] = field(default_factory=list)

    @property
    def mismatches(self) -> list[TableCount]:
        return [count for count in self.counts if not count.matches]

    @property
    def smoke_failures(self) -> list[SmokeResult]:
        return smoke_failures(self.smoke)


# planning ------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _connect(dsn: str) -> psycopg.Connection:
    return psycopg.connect(
        dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name=APPLICATION_NAME
    )


def _parse_target_dsn(dsn: str) -> str:
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise BadInput(
            "--to is not a PostgreSQL connection string (expected e.g. postgresql://user@host:5432/dbname)"
        ) from exc
    dbname = str(parts.get("dbname") or "")
    if not dbname:
        raise BadInput(
            f"--to {redact(dsn)} names no database (expected e.g. postgresql://user@host:5432/dbname)"
        )
    return dbname


_USER_SCHEMA = "n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_%'"
_NOT_FROM_EXTENSION = "not exists (select 1 from pg_depend d where d.objid = {} and d.deptype = 'e')"
# What makes a database "not empty" for a restore: anything a restore could collide with.
_OBJECTS_SQL = f"""
select
  (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p') and {_USER_SCHEMA} and {_NOT_FROM_EXTENSION.format("c.oid")}),
  (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('v', 'm', 'f') and {_USER_SCHEMA} and {_NOT_FROM_EXTENSION.format("c.oid")}),
  (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.relkind = 'S' and {_USER_SCHEMA} and {_NOT_FROM_EXTENSION.format("c.oid")}),
  (select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where {_USER_SCHEMA} and {_NOT_FROM_EXTENSION.format("p.oid")}),
  (select count(*) from pg_namespace n
    where {_USER_SCHEMA} and n.nspname <> 'public' and {_NOT_FROM_EXTENSION.format("n.oid")})
"""


def inspect_target(dsn: str) -> TargetDatabase:
    """Does the database exist, and what is in it? A missing database is found through the
    server's maintenance database (libpq reports it only as a localized message)."""
    dbname = _parse_target_dsn(dsn)
    try:
        conn = _connect(dsn)
    except psycopg.OperationalError as exc:
        if _database_missing(dsn, dbname):
            return TargetDatabase(dsn=dsn, dbname=dbname, exists=False, server_version=_server_version(dsn))
        raise DrsentryError(f"cannot connect to {redact(dsn)}: {sanitize(_first_line(exc), dsn)}") from exc
    with conn:
        row = conn.execute(_OBJECTS_SQL).fetchone()
        assert row is not None
        kinds = ("tables", "views", "sequences", "functions", "schemas")
        return TargetDatabase(
            dsn=dsn,
            dbname=dbname,
            exists=True,
            server_version=pgmeta.server_version(conn),
            objects={kind: int(value) for kind, value in zip(kinds, row, strict=True)},
        )


def _maintenance_connection(dsn: str) -> psycopg.Connection:
    last: psycopg.OperationalError | None = None
    for maintenance in MAINTENANCE_DATABASES:
        try:
            return _connect(make_conninfo(dsn, dbname=maintenance))
        except psycopg.OperationalError as exc:
            last = exc
    assert last is not None
    raise DrsentryError(
        f"cannot connect to the server of {redact(dsn)} (tried {', '.join(MAINTENANCE_DATABASES)}): "
        f"{sanitize(_first_line(last), dsn)}"
    ) from last


def _database_missing(dsn: str, dbname: str) -> bool:
    try:
        with _maintenance_connection(dsn) as conn:
            row = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
    except DrsentryError:
        return False
    return row is None


def _server_version(dsn: str) -> str | None:
    with _maintenance_connection(dsn) as conn:
        return pgmeta.server_version(conn)


def _refuse_source(
    runtime: Runtime, backup: BackupRecord, dsn: str, databases: Sequence[str] = ()
) -> str | None:
    """The name of the configured target whose source database `dsn` is, if any; `databases`:
    every database of the backup's own target, when it backs up several."""
    for target in runtime.config.targets:
        try:
            source = runtime.credentials.target_dsn(target)
        except CredentialsError:
            if target.name == backup.target:
                raise  # without the source DSN, restoring "somewhere safe" cannot be proven
            continue
        sources = [source]
        if target.name == backup.target:
            sources += [make_conninfo(source, dbname=name) for name in databases]
        if any(same_database(candidate, dsn) for candidate in sources):
            return target.name
    return None


def _one_database(backup: BackupRecord, database: str | None) -> BackupRecord:
    """The backup of one database: a backup of several needs `--database`, one of its own."""
    if not backup.databases:
        if database is not None:
            raise BadInput(
                f"--database: backup {backup.backup_id} holds one database; --database applies to "
                "backups of a target with several (databases:)"
            )
        return backup
    names = ", ".join(backup.database_names)
    if database is None:
        raise BadInput(f"backup {backup.backup_id} holds several databases ({names}): pass --database NAME")
    if database not in backup.database_names:
        raise BadInput(
            f"--database: backup {backup.backup_id} has no database {database!r} (it has: {names})"
        )
    return backup.for_database(database)


def _newest_verification(runtime: Runtime, backup: BackupRecord) -> VerificationRecord | None:
    for seen, record in enumerate(runtime.catalog.verifications.iter(backup.target)):
        if seen >= VERIFICATION_LOOKBACK:
            break
        if record.backup_id == backup.backup_id:
            return record
    return None


def _locate(runtime: Runtime, backup: BackupRecord) -> ObjectSource:
    """Where the backup's bytes can be read: the primary bucket, or the archive copy."""
    if backup.status == "completed" and runtime.buckets.bucket(backup.bucket).head(backup.key) is not None:
        return ObjectSource(backup.bucket, backup.key, f"s3://{backup.bucket}/{backup.key}")
    if is_archived(backup) and backup.key != (backup.archive.key if backup.archive else None):
        # The archive copy's restore state is kept for the record's first object only.
        raise BadInput(
            f"backup {backup.backup_id}: s3://{backup.bucket}/{backup.key} is missing; restoring one "
            "database of a backup of several from the archive is not supported: copy its archived "
            "object back to that key first"
        )
    if is_archived(backup):
        access = archive_readable(runtime, backup)
        return ObjectSource(
            access.bucket,
            access.key,
            f"archive copy s3://{access.bucket}/{access.key} ({access.storage_class}): {access.message}",
            archive=access,
        )
    if backup.status == "expired":
        raise BadInput(
            f"backup {backup.backup_id} expired at {backup.expired_at} ({backup.expire_reason}) and has no "
            "archive copy: there is nothing to restore"
        )
    raise StorageError(
        f"backup {backup.backup_id}: s3://{backup.bucket}/{backup.key} is missing "
        "and there is no archive copy"
    )


def plan_recovery(
    runtime: Runtime,
    backup_id: str,
    to_dsn: str,
    *,
    tables: tuple[str, ...] = (),
    clean: bool = False,
    jobs: int | None = None,
    mask: MaskingRules | None = None,
    allow_source: bool = False,
    schemas: tuple[str, ...] = (),
    no_owner: bool = False,
    database: str | None = None,
) -> RecoveryPlan:
    """Everything `restore` needs to know and refuse, before anything is touched."""
    whole = _restorable_backup(runtime, backup_id)
    backup = _one_database(whole, database)
    _parse_target_dsn(to_dsn)
    notes: list[str] = []
    source_of = _refuse_source(runtime, backup, to_dsn, whole.database_names)
    if source_of is not None:
        _refuse_restore_into_source(to_dsn, source_of, masked=mask is not None, allowed=allow_source)
        notes.append(f"--to is the source database of target {source_of!r} (--i-know-this-is-the-source)")
    wanted = _wanted_tables(backup, tables)
    _refuse_schemas(backup, schemas)
    tables = tuple(pgmeta.display_name(schema, name) for schema, name in wanted)
    if mask is not None:
        mask.check_tables(backup.tables, backup_id)
        mask, skipped = mask.for_tables(set(tables or backup.tables))
        if skipped:
            notes.append(f"mask rules for tables not restored are skipped: {', '.join(skipped)}")
    pg_restore = _pg_restore_for(runtime, backup)
    source = _locate(runtime, backup)
    target = inspect_target(to_dsn)
    if target.exists and not target.empty and not clean:
        raise BadInput(
            f"target database {target.where} is not empty ({target.describe_objects()}): "
            "pass --clean to drop and recreate the backup's objects there, or restore into an empty database"
        )
    notes.extend(_server_version_notes(backup, target))
    roles: RoleCreation | None = None
    if not no_owner:
        roles = _roles_to_create(runtime, backup, target, notes)
    selection: Selection | None = None
    if (wanted or schemas) and source.readable:
        selection = _select_entries(
            runtime, backup, source, pg_restore, target, tables=wanted, schemas=schemas
        )
    if mask is not None and mask.tables and source.readable:
        unchecked = _check_mask_columns(runtime, backup, source, mask, pg_restore)
        if unchecked is not None:
            notes.append(unchecked)
    return RecoveryPlan(
        backup=backup,
        source=source,
        target=target,
        tables=tables,
        clean=clean,
        jobs=jobs,
        mask=mask,
        pg_restore=pg_restore,
        backup_age_seconds=max((runtime.clock() - backup.started).total_seconds(), 0.0),
        verification=_newest_verification(runtime, backup),
        source_database_of=source_of,
        notes=notes,
        schemas=schemas,
        keep_owners=not no_owner,
        roles=roles,
        selection=selection,
    )


def _check_mask_columns(
    runtime: Runtime, backup: BackupRecord, source: ObjectSource, mask: MaskingRules, pg_restore: PgTool
) -> str | None:
    """Check the rules' columns against the archive's CREATE TABLEs (BadInput on a typo), so that
    a typo costs a look at the archive's head, not a whole restore. A note when the head cannot
    be read: masking then checks the rules inside its transaction, after the restore."""
    try:
        columns = read_table_columns(
            runtime.store.iter_chunks(source.bucket, source.key, SCHEMA_CHUNK_BYTES), pg_restore
        )
    except (SchemaUnreadable, StorageError) as exc:
        # The restore reads the same object and reports a storage error in its own words.
        return f"mask rule columns are checked after the restore: {_first_line(exc)}"
    mask.check_columns(columns, backup.backup_id)
    return None


def _restorable_backup(runtime: Runtime, backup_id: str) -> BackupRecord:
    """The catalog's record of `backup_id`; BadInput when it is a failed backup (nothing to restore)."""
    check_backup_id(backup_id)
    backup = runtime.catalog.get_backup(backup_id)
    if backup.status == "failed":
        raise BadInput(
            f"backup {backup_id} failed ({backup.error or 'no reason recorded'}): "
            "there is nothing to restore; "
            f"`drsentry backups list --target {backup.target}` lists the completed ones"
        )
    return backup


def _refuse_restore_into_source(to_dsn: str, source_of: str, *, masked: bool, allowed: bool) -> None:
    """`--to` is the source database of target `source_of`: never masked, else only when allowed."""
    if masked:
        raise BadInput(
            f"refused: --to {redact(to_dsn)} is the source database of target {source_of!r}; "
            "a masked restore never goes to a source database"
        )
    if not allowed:
        raise BadInput(
            f"refused: --to {redact(to_dsn)} is the source database of target {source_of!r}; restoring "
            "there overwrites production data. Pass --i-know-this-is-the-source if that is the intent"
        )


def parse_table_name(text: str) -> tuple[str, str]:
    """`--table` as (schema, name): `organizations` (public), `audit.events`, or quoted parts
    (`"Billing Data"."Invoice Lines"`) whose dots and spaces are part of the name."""
    from drsentry.core.globals import read_identifier

    try:
        first, rest = read_identifier(text) if text.startswith('"') else _bare_part(text)
        if not rest:
            return "public", first
        if not rest.startswith("."):
            raise GlobalsUnreadable(text)
        second, left = read_identifier(rest[1:]) if rest[1:].startswith('"') else _bare_part(rest[1:])
    except GlobalsUnreadable as exc:
        raise BadInput(
            f'--table {text!r} is not a table name (expected table, schema.table or "s"."t")'
        ) from exc
    if left:
        raise BadInput(f'--table {text!r} is not a table name (expected table, schema.table or "s"."t")')
    return first, second


def _bare_part(text: str) -> tuple[str, str]:
    head, dot, rest = text.partition(".")
    return head, f"{dot}{rest}"


def _backup_tables(backup: BackupRecord) -> dict[str, tuple[str, str]]:
    """The backup's tables as pgmeta names them -> (schema, name)."""
    return {
        table: (table.partition(".")[0], table.partition(".")[2]) if "." in table else ("public", table)
        for table in backup.tables
    }


def _wanted_tables(backup: BackupRecord, tables: tuple[str, ...]) -> list[tuple[str, str]]:
    """`--table` values as the backup's (schema, name); BadInput naming what the backup has."""
    known = _backup_tables(backup)
    wanted = []
    for text in tables:
        if text in known:  # the name as `backups list` shows it
            wanted.append(known[text])
            continue
        schema, name = parse_table_name(text)
        if pgmeta.display_name(schema, name) not in known:
            raise BadInput(
                f"table {text!r} is not in backup {backup.backup_id} "
                f"(it has: {', '.join(sorted(backup.tables))})"
            )
        wanted.append((schema, name))
    return wanted


def _refuse_schemas(backup: BackupRecord, schemas: tuple[str, ...]) -> None:
    have = sorted({schema for schema, _ in _backup_tables(backup).values()})
    for schema in schemas:
        if schema not in have:
            raise BadInput(
                f"schema {schema!r} is not in backup {backup.backup_id} (it has: {', '.join(have)})"
            )


def _server_session(target: TargetDatabase) -> postgres.Session:
    dsn = target.dsn if target.exists else make_conninfo(target.dsn, dbname=MAINTENANCE_DATABASES[0])
    return postgres.connect(dsn, application_name=APPLICATION_NAME)


def read_globals(runtime: Runtime, backup: BackupRecord) -> str:
    """The backup's roles object, once its size and SHA-256 equal the record's."""
    try:
        return read_roles_object(runtime.store, backup)
    except RolesObjectMismatch as exc:
        raise ChecksumMismatch(f"{exc}; nothing was restored") from exc


def _roles_to_create(
    runtime: Runtime, backup: BackupRecord, target: TargetDatabase, notes: list[str]
) -> RoleCreation | None:
    """The roles the backup needs and the target server lacks, from the backup's globals.
    BadInput, before anything is changed, when they cannot be created."""
    if backup.globals is None:
        notes.append(
            "this backup has no roles object (taken before drsentry backed up roles): owners and grants "
            "are kept, so every role they name must already exist on the target server"
        )
        return None
    try:
        cluster = parse_globals(read_globals(runtime, backup))
    except GlobalsUnreadable as exc:
        raise RestoreFailed(f"backup {backup.backup_id}: the roles object cannot be read: {exc}") from exc
    with _server_session(target) as session:
        on_server = roles_on_server(cluster, backup.globals.roles, session, target.dbname)
    creation, may_create = on_server.creation, on_server.may_create
    if creation.not_in_globals:
        raise BadInput(
            f"roles {', '.join(creation.not_in_globals)} are needed by backup {backup.backup_id} and exist "
            "neither on the target server nor in the backup's globals: create them, "
            "or restore with --no-owner"
        )
    if creation.created and not may_create:
        raise BadInput(
            f"the target server lacks roles {', '.join(creation.created)} and the restoring user may not "
            "create roles (needs CREATEROLE or superuser): create them first, connect as a user who may, "
            "or restore with --no-owner; nothing was changed"
        )
    if creation.skipped_settings:
        notes.append(
            f"{len(creation.skipped_settings)} role setting(s) for databases not on the target skipped"
        )
    return creation


def _select_entries(
    runtime: Runtime,
    backup: BackupRecord,
    source: ObjectSource,
    pg_restore: PgTool,
    target: TargetDatabase,
    *,
    tables: list[tuple[str, str]],
    schemas: tuple[str, ...],
) -> Selection:
    """The archive entries of a partial restore, from the archive's table of contents."""
    try:
        listing = read_listing(
            runtime.store.iter_chunks(source.bucket, source.key, SCHEMA_CHUNK_BYTES), pg_restore
        )
    except SchemaUnreadable as exc:
        raise RestoreFailed(
            f"backup {backup.backup_id}: cannot read the archive's table of contents: {exc}"
        ) from exc
    if target.exists:
        with postgres.connect(target.dsn, application_name=APPLICATION_NAME) as session:
            defined = session.defined_objects()
    else:
        # A new database from template0 holds schema public and plpgsql.
        defined = {("SCHEMA", "-", "public"), ("EXTENSION", "-", "plpgsql")}
    return select_entries(
        parse_listing(listing),
        tables=tables,
        schemas=schemas,
        defined=defined,
        known_tables=_backup_tables(backup).values(),
    )


def _pg_restore_for(runtime: Runtime, backup: BackupRecord) -> PgTool:
    """The configured pg_restore, when it can read what the backup's pg_dump wrote."""
    pg_restore = find_tool("pg_restore", runtime.config.pg_bin_dir)
    if backup.pg_dump_version and pg_restore.major < major_version(backup.pg_dump_version):
        raise PgToolsError(
            f"pg_restore {pg_restore.version} ({pg_restore.path}) cannot read an archive written by pg_dump "
            f"{backup.pg_dump_version}; install pg_restore {major_version(backup.pg_dump_version)} or newer"
        )
    return pg_restore


def _server_version_notes(backup: BackupRecord, target: TargetDatabase) -> list[str]:
    if (
        target.server_version
        and backup.pg_server_version
        and major_version(target.server_version) < major_version(backup.pg_server_version)
    ):
        return [
            f"the target server runs PostgreSQL {target.server_version}, the backup comes from "
            f"{backup.pg_server_version}: objects newer than the target server may fail to restore"
        ]
    return []


# the download ------------------------------------------------------------------------


class VerifiedDownload(ObjectStore):
    """The object's chunks for `stream_restore`, hashed on the way; the last HOLD_BACK_BYTES
    are handed over only once size and SHA-256 equal the catalog's. On a mismatch the
    iteration raises instead, stream_restore stops pg_restore, and its one transaction rolls back."""

    def __init__(self, store: ObjectStore, backup: BackupRecord, progress: RecoveryProgress) -> None:
        super().__init__(store.s3, store.kms_key)
        self._store = store
        self._backup = backup
        self._progress = progress
        self.size_bytes = 0
        self.sha256 = ""

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
        digest = hashlib.sha256()
        held: deque[bytes] = deque()
        held_bytes = 0
        for chunk in self._store.iter_chunks(bucket, key, chunk_size):
            digest.update(chunk)
            self.size_bytes += len(chunk)
            self._progress.advance(len(chunk))
            held.append(chunk)
            held_bytes += len(chunk)
            while held and held_bytes - len(held[0]) >= HOLD_BACK_BYTES:
                released = held.popleft()
                held_bytes -= len(released)
                yield released
        self.sha256 = digest.hexdigest()
        check_download(
            self._backup,
            bucket,
            key,
            size_bytes=self.size_bytes,
            sha256=self.sha256,
            consequence="pg_restore was stopped before it could commit",
        )
        self._progress.phase("pg_restore: finishing (indexes, constraints)")
        yield from held


def check_download(
    backup: BackupRecord, bucket: str, key: str, *, size_bytes: int, sha256: str, consequence: str
) -> None:
    """Size and SHA-256 of the downloaded bytes against the catalog; ChecksumMismatch says what differs."""
    problems = []
    if backup.size_bytes is not None and size_bytes != backup.size_bytes:
        problems.append(f"{size_bytes:,} bytes, the catalog says {backup.size_bytes:,}")
    if backup.sha256 is None:
        problems.append("the catalog record has no SHA-256 to check against")
    elif sha256 != backup.sha256:
        problems.append(f"SHA-256 {sha256} differs from the catalog's {backup.sha256}")
    if problems:
        raise ChecksumMismatch(
            f"backup {backup.backup_id}: s3://{bucket}/{key}: {'; '.join(problems)}; nothing was restored "
            f"({consequence})"
        )


def download_archive(
    store: ObjectStore,
    backup: BackupRecord,
    source: ObjectSource,
    directory: Path,
    progress: RecoveryProgress,
) -> Path:
    """The backup's pg_dump archive, decompressed into a file in `directory`, once its SHA-256 matched."""
    path = directory / f"{backup.backup_id}.dump"
    digest = hashlib.sha256()
    size = 0
    with path.open("wb") as archive:
        decoder = zstandard.ZstdDecompressor().stream_writer(archive, closefd=False)
        unreadable: str | None = None
        for chunk in store.iter_chunks(source.bucket, source.key):
            digest.update(chunk)
            size += len(chunk)
            progress.advance(len(chunk))
            if unreadable is None:
                try:
                    decoder.write(chunk)
                except zstandard.ZstdError as exc:
                    # Keep hashing to the end: a checksum mismatch names the real cause.
                    unreadable = f"zstd stream is corrupt after {size:,} bytes: {exc}"
        check_download(
            backup,
            source.bucket,
            source.key,
            size_bytes=size,
            sha256=digest.hexdigest(),
            consequence="pg_restore was not started",
        )
        if unreadable is not None:
            raise RestoreFailed(f"backup {backup.backup_id}: archive unreadable: {unreadable}")
        decoder.flush()
    return path


# databases on the target server --------------------------------------------------------


def _create_database(dsn: str, dbname: str, *, private: bool) -> None:
    with _maintenance_connection(dsn) as conn:
        name = sql.Identifier(dbname)
        try:
            # template0: nothing installed in template1 may collide with what the archive creates.
            conn.execute(sql.SQL("create database {} template template0").format(name))
        except psycopg.Error as exc:
            why = " (masked restores need CREATEDB on the target server)" if private else ""
            raise DrsentryError(
                f"cannot create database {dbname} on {redact(dsn)}{why}: {sanitize(_first_line(exc), dsn)}"
            ) from exc
        if private:
            conn.execute(sql.SQL("revoke connect on database {} from public").format(name))


def _drop_database(dsn: str, dbname: str) -> None:
    try:
        with _maintenance_connection(dsn) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))
    except (DrsentryError, psycopg.Error) as exc:
        logger.error(
            "could not drop a database drsentry created", extra={"database": dbname, "error": str(exc)}
        )


def _swap_in(dsn: str, private: str, target: TargetDatabase) -> None:
    """Replace the target database by the masked one (it is complete and masked by now)."""
    with _maintenance_connection(dsn) as conn:
        try:
            if target.exists:
                conn.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(target.dbname))
                )
            conn.execute(
                sql.SQL("alter database {} rename to {}").format(
                    sql.Identifier(private), sql.Identifier(target.dbname)
                )
            )
            conn.execute(
                sql.SQL("grant connect on database {} to public").format(sql.Identifier(target.dbname))
            )
        except psycopg.Error as exc:
            raise DrsentryError(
                f"the masked database {private} is ready but could not replace {target.dbname}: "
                f"{sanitize(_first_line(exc), dsn)}; rename it by hand or drop it"
            ) from exc


# the restore ------------------------------------------------------------------------------


def _clean_options(plan: RecoveryPlan) -> list[str]:
    # A masked restore goes into a fresh private database: nothing there to clean.
    return ["--clean", "--if-exists"] if plan.clean and plan.mask is None else []


def file_restore_options(plan: RecoveryPlan, list_file: Path | None = None) -> list[str]:
    options = _clean_options(plan)
    options += [f"--jobs={plan.jobs}"] if plan.jobs else ["--single-transaction"]
    if not plan.keep_owners:
        options += ["--no-owner", "--no-privileges"]
    if list_file is not None:
        # The entries restore_selection chose: pg_restore's own --table brings no partitions.
        options.append(f"--use-list={list_file}")
    return options


def table_schema(table: str) -> str:
    """`appointments` is public's (as pgmeta names tables), `audit.events` is audit's."""
    return table.rpartition(".")[0] or "public"


def _run_pg_restore(plan: RecoveryPlan, dsn: str, archive: Path, list_file: Path | None = None) -> None:
    dsn_without_password, env = pg_environment(dsn, APPLICATION_NAME)
    command = [
        str(plan.pg_restore.path),
        "--exit-on-error",
        "--no-password",
        *file_restore_options(plan, list_file),
        f"--dbname={dsn_without_password}",
        str(archive),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, env=env, check=False)
    except OSError as exc:
        raise PgToolsError(f"cannot start {plan.pg_restore.path}: {exc.strerror or exc}") from exc
    stderr = sanitize(completed.stderr[:STDERR_LIMIT].decode("utf-8", errors="replace"), dsn)
    errors = [
        line.strip() for line in stderr.splitlines() if "error:" in line.lower() or "fatal:" in line.lower()
    ]
    if completed.returncode != 0 or errors:
        detail = "; ".join((errors or stderr.splitlines())[:3])
        raise RestoreFailed(f"pg_restore exited with code {completed.returncode}: {detail}")


def _restore_into(
    runtime: Runtime, plan: RecoveryPlan, dsn: str, progress: RecoveryProgress
) -> tuple[int, str, float]:
    """Restore the backup into `dsn`; (object size, SHA-256, restore seconds)."""
    started = time.monotonic()
    progress.start(f"restoring {plan.backup.backup_id}", plan.backup.size_bytes)
    try:
        if plan.mode == "stream":
            download = VerifiedDownload(runtime.store, plan.backup, progress)
            outcome = stream_restore(
                download,
                plan.source.bucket,
                plan.source.key,
                dsn,
                plan.pg_restore,
                options=(*_clean_options(plan), "--single-transaction"),
                remaining_seconds=runtime.remaining_seconds,
                application_name=APPLICATION_NAME,
                keep_owners=plan.keep_owners,
            )
            outcome.raise_for_failure()
            return download.size_bytes, download.sha256, time.monotonic() - started
        with tempfile.TemporaryDirectory(prefix="drsentry-restore-") as directory:
            archive = download_archive(runtime.store, plan.backup, plan.source, Path(directory), progress)
            progress.phase(f"pg_restore{f' --jobs {plan.jobs}' if plan.jobs else ''}")
            list_file = None
            if plan.selection is not None:
                list_file = Path(directory) / "selected.list"
                list_file.write_text(plan.selection.listing(), encoding="utf-8")
            _run_pg_restore(plan, dsn, archive, list_file)
        return plan.backup.size_bytes or 0, plan.backup.sha256 or "", time.monotonic() - started
    except ObjectArchived as exc:
        raise explain_unreadable(plan.backup, exc) from exc


def _count(plan: RecoveryPlan, masking: MaskingReport | None) -> tuple[list[TableCount], list[str]]:
    with _connect(plan.target.dsn) as conn:
        # Count every row, as pg_dump saw them: no policy may filter the restoring role's counts.
        conn.execute("set row_security = off")
        restored = pgmeta.count_rows(conn)
    truncated = set(masking.truncated) if masking else set()
    counts = []
    for table in plan.restored_tables:
        note = "truncated by the mask rules" if table in truncated else ""
        counts.append(TableCount(table, plan.backup.tables.get(table), restored.get(table), note))
    warnings = []
    if not plan.partial:
        extra = sorted(set(restored) - set(plan.backup.tables))
        if extra:
            warnings.append(
                f"tables in {plan.target.dbname} that the backup does not have: {', '.join(extra)}"
            )
    return counts, warnings


def execute_recovery(
    runtime: Runtime,
    plan: RecoveryPlan,
    progress: RecoveryProgress | None = None,
    smoke: Sequence[SmokeCheck] = (),
) -> RecoveryResult:
    """Restore as planned, then run the `smoke` checks. Raises ArchiveNotReadable when the bytes are
    still in Glacier (after requesting their restore), ChecksumMismatch / RestoreFailed when the
    restore did not complete."""
    progress = progress or NoProgress()
    started = time.monotonic()
    if not plan.source.readable and plan.source.archive is not None:
        _stop_at_archive(runtime, plan)
    target = plan.target
    _create_roles(plan)
    created: str | None = None
    restore_dsn = target.dsn
    if plan.mask is not None:
        created = f"{MASK_PREFIX}{secrets.token_hex(6)}"
        _create_database(target.dsn, created, private=True)
        restore_dsn = make_conninfo(target.dsn, dbname=created)
    elif not target.exists:
        created = target.dbname
        _create_database(target.dsn, created, private=False)
    masking: MaskingReport | None = None
    try:
        size, sha256, restore_seconds = _restore_into(runtime, plan, restore_dsn, progress)
        if plan.mask is not None and created is not None:
            progress.phase("masking")
            with _connect(restore_dsn) as conn:
                masking = apply_masking(conn, plan.mask)
            _swap_in(target.dsn, created, target)
            created = None
    except RestoreFailed as exc:
        if created is not None:
            _drop_database(target.dsn, created)
        raise _with_target_state(plan, exc, created is not None) from exc
    except BaseException:
        if created is not None:
            # Only what this restore created: a half-restored new database helps nobody, and a
            # private one may hold unmasked rows.
            _drop_database(target.dsn, created)
        raise
    progress.phase("counting rows")
    counts, warnings = _count(plan, masking)
    if smoke:
        progress.phase(f"running {len(smoke)} smoke check(s)")
    smoke_results = run_smoke_checks(smoke, target.dsn)
    logger.info(
        "restore finished",
        extra={
            "backup_id": plan.backup.backup_id,
            "target": target.where,
            "restore_seconds": round(restore_seconds, 3),
            "tables": len(counts),
        },
    )
    return RecoveryResult(
        plan=plan,
        size_bytes=size,
        sha256=sha256,
        restore_seconds=round(restore_seconds, 3),
        total_seconds=round(time.monotonic() - started, 3),
        counts=counts,
        masking=masking,
        warnings=warnings,
        smoke=smoke_results,
    )


def _create_roles(plan: RecoveryPlan) -> None:
    """The backup's roles the target lacks, before anything else is changed: all or none."""
    if plan.roles is None or not plan.roles.statements:
        return
    try:
        with _server_session(plan.target) as session:
            session.run_role_statements(plan.roles.statements)
    except postgres.RoleNotCreated as exc:
        raise BadInput(f"{exc}; no role was created and nothing was restored") from exc
    logger.info("roles created", extra={"roles": plan.roles.created})


def _with_target_state(plan: RecoveryPlan, exc: RestoreFailed, created: bool) -> RestoreFailed:
    """Say what the failed restore left in the target: the operator's next question."""
    if isinstance(exc, ChecksumMismatch):
        return exc
    dbname = plan.target.dbname
    if created and plan.mask is not None:
        state = f"the private database was dropped; {dbname} is as it was"
    elif created:
        state = f"{dbname} did not exist before and was dropped again"
    elif plan.jobs:
        state = (
            f"--jobs restores are not one transaction: {dbname} may hold part of the backup "
            "(retry with --clean)"
        )
    else:
        state = f"the restore ran in one transaction: {dbname} is as it was"
    return type(exc)(f"{exc}; {state}")


def _stop_at_archive(runtime: Runtime, plan: RecoveryPlan) -> None:
    access = plan.source.archive
    assert access is not None
    if access.state == "archived":
        access = request_archive_restore(runtime, plan.backup.backup_id)
    # access.py's message says what S3 is doing and when to come back.
    raise ArchiveNotReadable(f"backup {plan.backup.backup_id}: {access.message}")
