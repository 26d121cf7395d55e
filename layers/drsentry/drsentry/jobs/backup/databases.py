"""A target of several databases (config `databases`): which databases, each dumped in turn
under the one backup id, and the record fields and manifests that describe them.

Each database gets the single-database dump (`dump.DatabaseDump`: its own exported snapshot,
its own facts read in it) into its own object under the backup's key prefix; the roles are
the server's, captured once with the first database. One after the other, not in parallel:
every dump already uses a core for zstd and one for pg_dump, and a Lambda has two.

A database that cannot be dumped (dropped since it was listed, no CONNECT, pg_dump failing)
fails the whole backup, naming it: the dumps already stored are withdrawn, so a backup is
either every database or nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from drsentry.adapters import postgres
from drsentry.adapters.buckets import Bucket
from drsentry.adapters.secrets import make_conninfo
from drsentry.core.config import TargetConfig
from drsentry.core.errors import BackupFailed, DrsentryError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, DatabaseBackup
from drsentry.jobs.backup.dump import DatabaseDump, DumpOutcome
from drsentry.jobs.backup.rules import backup_manifest, database_object_keys


@dataclass
class DumpedDatabase:
    """One database's dump of a backup; `name` None for a single-database target."""

    name: str | None
    key: str
    manifest_key: str
    outcome: DumpOutcome


# Builds the dump of one database into `key`; `capture_roles` False for all but the first.
DumpFactory = Callable[[str, bool], DatabaseDump]


def databases_to_back_up(target: TargetConfig, dsn: str) -> list[str]:
    """The configured list, or for `all` every database the DSN's user may connect to."""
    if target.databases is None:
        raise ValueError(f"target {target.name!r} backs up the database of its DSN only")
    if target.databases != "all":
        return list(target.databases)
    try:
        with postgres.connect(dsn, application_name="drsentry-backup") as session:
            names = session.connectable_databases()
    except DrsentryError as exc:
        raise BackupFailed(f"listing the databases of target {target.name!r} failed: {exc}") from exc
    if not names:
        raise BackupFailed(f"target {target.name!r}: the user may connect to no database (databases: all)")
    return names


def dump_databases(
    bucket: Bucket,
    names: list[str],
    keys: Callable[[str], tuple[str, str]],
    dsn: str,
    *,
    make_dump: DumpFactory,
    on_planned: Callable[[str], None],
) -> list[DumpedDatabase]:
    """Dump each database in `names` in turn; BackupFailed naming the database that failed,
    after removing every dump already stored. `on_planned` hears each database's dump and
    manifest keys before its upload starts (an interrupted run removes them)."""
    dumped: list[DumpedDatabase] = []
    try:
        for index, name in enumerate(names):
            key, manifest_key = keys(name)
            on_planned(key)
            on_planned(manifest_key)
            dump = make_dump(key, index == 0)
            try:
                outcome = dump.run(make_conninfo(dsn, dbname=name))
            except DrsentryError as exc:
                # One line: the server's DETAIL (e.g. "User does not have CONNECT privilege.") included.
                reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                raise BackupFailed(f"database {name!r}: {reason}") from exc
            dumped.append(DumpedDatabase(name, key, manifest_key, outcome))
            logger.info(
                "database dumped",
                extra={"database": name, "key": key, "size_bytes": outcome.stored.size_bytes},
            )
    except BaseException:
        # Withdrawn (a delete marker each): the backup role may not destroy a version.
        bucket.hide([done.key for done in dumped])
        raise
    return dumped


def database_keys(prefix: str, target: str, backup_id: str) -> Callable[[str], tuple[str, str]]:
    return lambda database: database_object_keys(prefix, target, backup_id, database)


def several_databases_fields(dumped: list[DumpedDatabase]) -> dict[str, Any]:
    """The record's fields for a backup of several databases: the per-database entries, and the
    whole backup at the top (the sum of the sizes, the first database's key, `db.table` counts)."""
    entries = [
        DatabaseBackup(
            name=str(database.name),
            key=database.key,
            manifest_key=database.manifest_key,
            sha256=database.outcome.stored.sha256,
            size_bytes=database.outcome.stored.size_bytes,
            pg_server_version=database.outcome.facts.server_version,
            pg_dump_version=database.outcome.pg_dump.version,
            database_size_bytes=database.outcome.facts.database_size_bytes,
            schema_fingerprint=database.outcome.facts.schema_fingerprint,
            tables=database.outcome.facts.tables,
        )
        for database in dumped
    ]
    first = dumped[0].outcome
    return {
        "key": entries[0].key,
        "sha256": None,
        "size_bytes": sum(entry.size_bytes for entry in entries),
        "pg_server_version": first.facts.server_version,
        "pg_dump_version": first.pg_dump.version,
        "database_size_bytes": sum(entry.database_size_bytes or 0 for entry in entries),
        "schema_fingerprint": None,
        "tables": {
            f"{entry.name}.{table}": rows for entry in entries for table, rows in entry.tables.items()
        },
        "databases": entries,
    }


def referenced_roles(dumped: list[DumpedDatabase]) -> list[str]:
    """Every role any of the databases references: what a restore of any of them may need."""
    return sorted({role for database in dumped for role in database.outcome.facts.roles})


def write_database_manifests(bucket: Bucket, record: BackupRecord, dumped: list[DumpedDatabase]) -> None:
    """Each database's manifest (its record view and the facts of its snapshot), shaped like a
    single-database backup's, so verify and a restore read it the same way."""
    for database in dumped:
        view = record.for_database(str(database.name))
        bucket.put_json(database.manifest_key, backup_manifest(view, database.outcome.facts))
