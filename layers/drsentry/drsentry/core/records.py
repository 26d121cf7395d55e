"""Records users and their scripts read (CONTRACT.md "Records")."""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from drsentry.core.errors import BackupNotFound

BACKUP_ID_RE = re.compile(r"^\d{8}T\d{9}Z-[0-9a-f]{8}$")
Tier = Literal["hourly", "daily", "weekly", "monthly"]
# `expired`: deleted by GFS retention (the record stays, with the reason).
BackupStatus = Literal["completed", "failed", "expired"]


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 UTC with a Z, second precision: what every record shows."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def new_backup_id(started_at: datetime) -> str:
    """`20261122T180000042Z-1a2b3c4d`: UTC time to the millisecond, so ids sort by time;
    the random tail keeps ids of the same millisecond apart."""
    moment = started_at.astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%S}{moment.microsecond // 1000:03d}Z-{secrets.token_hex(4)}"


def check_backup_id(backup_id: str) -> str:
    if not BACKUP_ID_RE.match(backup_id):
        raise BackupNotFound(
            f"malformed backup id {backup_id!r} (expected e.g. 20261122T180000042Z-1a2b3c4d)"
        )
    return backup_id


# archive copy sub-document -------------------------------------------------------------
# `BackupRecord.archive`: the verified copy in the archive bucket (written by jobs/archive/copy.py)
# and the state of its S3 restore (jobs/archive/access.py). Records of every earlier version must
# read and write back unchanged, so these models dump only the fields they were given: a field the
# stored map did not have stays absent, one stored as null (lock_mode without a lock) stays null.

RestoreTier = Literal["Standard", "Bulk", "Expedited"]
# `archived`: not restored (a restore requested earlier has run out).
ArchiveRestoreStatus = Literal["pending", "restored", "archived"]
# How an archive copy's SHA-256 was checked: the source's tag, or by reading the copy.
VerifiedBy = Literal["tag", "read"]


class SubDocument(BaseModel):
    """A map inside a catalog item that dumps (and so is stored and printed) with exactly the
    fields it was read or built with, nulls included."""

    model_config = ConfigDict(extra="ignore")

    @model_serializer(mode="wrap")
    def _given_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {name: value for name, value in handler(self).items() if name in self.model_fields_set}


class ArchiveRestore(SubDocument):
    """The S3 restore of an archive copy in GLACIER / DEEP_ARCHIVE, as last seen."""

    status: ArchiveRestoreStatus | None = None
    tier: RestoreTier | None = None
    days: int | None = None
    requested_at: str | None = None
    checked_at: str | None = None
    # When S3 removes the temporary restored copy again.
    readable_until: str | None = None


class ArchiveCopy(SubDocument):
    """The backup's copy in the archive bucket; counts only with `archived_at` and no `deleted_at`."""

    bucket: str
    # Written by every archive run; records made by hand may leave them out (then the
    # primary copy's key and manifest key are the archive copy's too).
    key: str | None = None
    manifest_key: str | None = None
    storage_class: str | None = None
    # None when the archive is configured without a lock (lock_days 0).
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] | None = None
    retain_until: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    version_id: str | None = None
    verified_by: VerifiedBy | None = None
    archived_at: str | None = None
    deleted_at: str | None = None
    restore: ArchiveRestore | None = None


# replica sub-document


class ReplicaDetail(BaseModel):
    """Where a backup's replica is and what was found there (the record's ``replica_detail``).

    The copy after a backup and the replication check write it whole: bucket, region and
    checked_at always; for a replica verified identical, the version id and fingerprint
    (ETag, last-modified second) that were verified, so that a later rewrite is noticed;
    the reason when the replica is not identical. The check's window listing reads back only
    the fields it needs, so every field may be absent. Stored as a map without its absent
    fields, exactly as the untyped map before it, so existing catalogs still read.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    bucket: str | None = None
    region: str | None = None
    checked_at: str | None = None
    version_id: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None

    @model_serializer(mode="wrap")
    def _without_absent_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # An absent field is left out, never stored as NULL (nor printed as null).
        return {name: value for name, value in handler(self).items() if value is not None}


# storage manifests sub-document


class StorageManifestEntry(BaseModel):
    """One entry of a backup record's ``storage``: the manifest of one application bucket, written
    beside the dump at ``key``. Stored with every field, None ones as NULL, as catalogs hold it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    bucket: str
    region: str
    prefix: str = ""
    key: str
    versioned: bool | None = None
    objects: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    # Why the manifest was not written (or its totals not recorded); None when it was.
    error: str | None = None

    @property
    def complete(self) -> bool:
        """Written and counted: what verify can compare and restore-list can read."""
        return not self.error and self.objects is not None


# cluster globals sub-document
# `BackupRecord.globals`: the cluster's roles beside the dump (CONTRACT "Records": its key and
# SHA-256). pg_dump never contains roles, so without this object a backup cannot be restored into
# a blank server: every owner, grant and policy naming a role would fail.


class ClusterGlobals(BaseModel):
    """The roles object of a backup: `pg_dumpall --globals-only` SQL text (roles, memberships,
    role settings, tablespaces), stored beside the dump at `key` under the dump's rules
    (checksummed, in the manifest, replicated, archived, locked, expired with it)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    key: str
    sha256: str
    size_bytes: int
    # False when the backup's user could not read passwords (RDS, Aurora, any non-superuser):
    # the roles were dumped with --no-role-passwords and come back without one.
    role_passwords: bool
    # The roles the database references (owners, grantees, policy roles and the roles they are
    # members of), sorted: what a restore must find or create.
    roles: list[str] = Field(default_factory=list)


# runner sub-document
# `BackupRecord.runner` / `VerificationRecord.runner`: where the run ran and why (CONTRACT "Records").

RunnerName = Literal["lambda", "fargate"]


class RunnerUsed(BaseModel):
    """Which runner ran a backup or verification, and why it was chosen (jobs/fargate/rules.py)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: RunnerName
    reason: str


# databases sub-document
# `BackupRecord.databases`: a target of several databases (config `databases`) has one dump and
# one manifest per database under the backup's key prefix; the top-level fields then describe
# the backup as a whole (`size_bytes` the sum, `key` the first database's dump, no `sha256`).


class DatabaseBackup(BaseModel):
    """One database of a backup of several: its dump, its manifest, what its snapshot held."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    key: str
    manifest_key: str
    sha256: str
    size_bytes: int
    pg_server_version: str | None = None
    pg_dump_version: str | None = None
    database_size_bytes: int | None = None
    schema_fingerprint: str | None = None
    tables: dict[str, int] = Field(default_factory=dict)


class BackupObject(BaseModel):
    """One stored object of a backup with a checksum: a dump or the roles object."""

    model_config = ConfigDict(frozen=True)

    key: str
    sha256: str | None
    size_bytes: int | None
    # The database whose dump this is (None: the roles object, or a single-database backup).
    database: str | None = None
    kind: Literal["dump", "globals"] = "dump"


class BackupRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    target: str
    backup_id: str
    status: BackupStatus
    started_at: str
    finished_at: str | None = None
    duration_seconds: float | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    bucket: str
    key: str
    manifest_key: str
    storage_class: str = "STANDARD"
    tier: Tier | None = None
    pg_server_version: str | None = None
    pg_dump_version: str | None = None
    database_size_bytes: int | None = None
    compression: str | None = None
    schema_fingerprint: str | None = None
    tables: dict[str, int] = Field(default_factory=dict)
    replica: str | None = None
    replica_detail: ReplicaDetail | None = None
    archive: ArchiveCopy | None = None
    # One entry per configured application bucket: bucket, region, prefix, key (of its manifest
    # beside the dump), versioned, objects, bytes, sha256, and error when the manifest failed.
    storage: list[StorageManifestEntry] | None = None
    # None for backups taken before roles were backed up.
    globals: ClusterGlobals | None = None
    # Object Lock of the primary copy (dump, manifest, roles object) and the replica: until the
    # end of the longest GFS slot the primary copy serves; an archive run only ever extends it.
    # None for backups taken before the primary bucket had Object Lock.
    retain_until: str | None = None
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] | None = None
    # A monthly backup whose verified, locked archive copy now serves its slot alone: the
    # primary and replica copies were expired with its shorter slots; restores read the archive.
    primary_expired_at: str | None = None
    expired_at: str | None = None
    expire_reason: str | None = None
    error: str | None = None
    run_id: str | None = None
    # None for runs outside AWS (a laptop's `drsentry run`) and before runners were recorded.
    runner: RunnerUsed | None = None

    # Set only for a target of several databases (in the order they were dumped); a
    # single-database record has no such field at all, so its documents read as they always did.
    databases: list[DatabaseBackup] | None = None

    @model_serializer(mode="wrap")
    def _without_absent_databases(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        fields: dict[str, Any] = handler(self)
        if fields.get("databases", ...) is None:
            del fields["databases"]
        return fields

    @property
    def started(self) -> datetime:
        return parse_iso(self.started_at)

    @property
    def database_names(self) -> list[str]:
        """The databases of a backup of several; [] for a single-database backup."""
        return [database.name for database in self.databases or []]

    def objects(self) -> list[BackupObject]:
        """Every stored object of the backup with its checksum: each dump, then the roles object."""
        if self.databases:
            stored = [
                BackupObject(key=db.key, sha256=db.sha256, size_bytes=db.size_bytes, database=db.name)
                for db in self.databases
            ]
        else:
            stored = [BackupObject(key=self.key, sha256=self.sha256, size_bytes=self.size_bytes)]
        if self.globals is not None:
            stored.append(
                BackupObject(
                    key=self.globals.key,
                    sha256=self.globals.sha256,
                    size_bytes=self.globals.size_bytes,
                    kind="globals",
                )
            )
        return stored

    def manifest_keys(self) -> list[str]:
        """Each database's manifest, then the backup's own (what `catalog rebuild` reads) last."""
        return [database.manifest_key for database in self.databases or []] + [self.manifest_key]

    def all_keys(self) -> list[str]:
        """Every key the backup stored: its objects, then its manifests (the backup's own last)."""
        return [stored.key for stored in self.objects()] + self.manifest_keys()

    def database_views(self) -> list[BackupRecord]:
        """The backup as one record per database, each shaped like a single-database backup
        (its dump, manifest, checksum, tables); [self] for a single-database backup."""
        return [self.for_database(name) for name in self.database_names] or [self]

    def for_database(self, name: str) -> BackupRecord:
        """The backup of database `name` shaped like a single-database backup record."""
        database = next((db for db in self.databases or [] if db.name == name), None)
        if database is None:
            known = ", ".join(self.database_names) or "none (a single-database backup)"
            raise BackupNotFound(f"backup {self.backup_id} has no database {name!r} (it has: {known})")
        return self.model_copy(
            update={
                "key": database.key,
                "manifest_key": database.manifest_key,
                "sha256": database.sha256,
                "size_bytes": database.size_bytes,
                "pg_server_version": database.pg_server_version or self.pg_server_version,
                "pg_dump_version": database.pg_dump_version or self.pg_dump_version,
                "database_size_bytes": database.database_size_bytes,
                "schema_fingerprint": database.schema_fingerprint,
                "tables": dict(database.tables),
                "databases": None,
            }
        )


Source = Literal["backup", "verify", "archive", "replication-check"]
Severity = Literal["critical", "warning", "info"]


class RunNotice(BaseModel):
    """The one SNS message every run publishes (CONTRACT.md "Notifications")."""

    source: Source
    target: str
    severity: Severity
    status: str
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    run_id: str


VerificationStatus = Literal["success", "warning", "failure"]
CheckSeverity = Literal["critical", "warning"]
# "skipped": not run because an earlier step failed (the detail says which).
CheckStatus = Literal["passed", "failed", "skipped"]


class Check(BaseModel):
    """One entry of a verification record's ``checks``."""

    name: str
    severity: CheckSeverity
    status: CheckStatus
    detail: str = ""


class VerifyServer(BaseModel):
    """Which server a verification restored into (CONTRACT.md: throwaway or standing, its version,
    its start seconds), and the settings of a throwaway one that differ from PostgreSQL's defaults."""

    kind: Literal["throwaway", "standing"]
    version: str | None = None
    # Seconds from initdb to ready; None for a standing server (nothing was started).
    start_seconds: float | None = None
    settings: dict[str, str] = Field(default_factory=dict)


def new_verification_id() -> str:
    """Milliseconds since the epoch (hex) then randomness: records of one second still sort by time."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


class VerificationRecord(BaseModel):
    """CONTRACT.md "Records": what `verifications list --json` prints, one per verification."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=new_verification_id)
    target: str
    backup_id: str
    verified_at: str
    backup_age_hours: float | None = None
    backup_size_mb: float | None = None
    status: VerificationStatus
    checks_passed: int = 0
    checks_failed: int = 0
    restore_seconds: float | None = None
    checks: list[Check] = Field(default_factory=list)
    error_details: str | None = None
    runner: RunnerUsed | None = None
    run_id: str | None = None
    server: VerifyServer | None = None
    # The time split beside restore_seconds (the restore alone, compared with the RTO) and
    # server.start_seconds: the checks on the restored database.
    checks_seconds: float | None = None

    @property
    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]


def derive_status(checks: list[Check]) -> VerificationStatus:
    """Any failed critical check makes `failure`; otherwise any failed warning check makes
    `warning`; else `success`. No checks at all proves nothing, so that is a `failure` too."""
    if not checks or any(c.status == "failed" and c.severity == "critical" for c in checks):
        return "failure"
    if any(c.status == "failed" for c in checks):
        return "warning"
    return "success"
