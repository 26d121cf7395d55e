"""The roles a restore brings back, shared by a real recovery (operator/recovery.py) and the
verification restore (jobs/verify): the backup's roles object read whole and checked against the
record, and what a server lacks of the roles the backup needs, with the statements that create
them (core/globals.py) run in one transaction.

Verify and recovery take the same path on purpose: a verification that restored with roles it
found on a standing scratch server would pass a backup that a blank server cannot restore.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from drsentry.adapters import postgres
from drsentry.adapters.buckets import ObjectStore
from drsentry.core.errors import StorageError
from drsentry.core.gfs import is_archived
from drsentry.core.globals import ClusterRoles, RoleCreation, roles_to_create
from drsentry.core.records import BackupRecord


class RolesObjectMismatch(StorageError):
    """The roles object's bytes are not the ones the backup record describes."""


def roles_object_bytes(store: ObjectStore, backup: BackupRecord) -> bytes:
    """The backup's roles object as stored (a few kilobytes, read whole); StorageError when unreadable."""
    assert backup.globals is not None
    return b"".join(store.iter_chunks(roles_object_bucket(backup), backup.globals.key))


def roles_object_bucket(backup: BackupRecord) -> str:
    """Where the roles object is read: the primary bucket, or, once the primary copy of an archived
    backup has expired, the archive bucket (the archive copy keeps it in STANDARD, same key)."""
    if backup.primary_expired_at and backup.archive is not None and is_archived(backup):
        return backup.archive.bucket
    return backup.bucket


def roles_object_mismatch(backup: BackupRecord, data: bytes) -> str | None:
    """What differs between `data` and the record's size and SHA-256; None when they match."""
    assert backup.globals is not None
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 == backup.globals.sha256 and len(data) == backup.globals.size_bytes:
        return None
    where = f"s3://{roles_object_bucket(backup)}/{backup.globals.key}"
    return (
        f"{where}: {len(data):,} bytes with SHA-256 {sha256}, "
        f"the record says {backup.globals.size_bytes:,} bytes and {backup.globals.sha256}"
    )


def read_roles_object(store: ObjectStore, backup: BackupRecord) -> str:
    """The backup's roles object (SQL text), once its size and SHA-256 equal the record's;
    RolesObjectMismatch when they do not."""
    data = roles_object_bytes(store, backup)
    problem = roles_object_mismatch(backup, data)
    if problem is not None:
        raise RolesObjectMismatch(f"backup {backup.backup_id}: {problem}")
    return data.decode("utf-8")


@dataclass
class RolesOnServer:
    """What a server lacks of the roles a backup needs, and whether the connected user may create them."""

    creation: RoleCreation
    may_create: bool


def roles_on_server(
    cluster: ClusterRoles, needed: list[str], session: postgres.Session, database: str
) -> RolesOnServer:
    """The statements creating the `needed` roles the server of `session` lacks; role settings for
    `database` (the one being restored into, which may not exist yet) are kept."""
    existing = session.role_names()
    databases = session.database_names() | {database}
    return RolesOnServer(roles_to_create(cluster, needed, existing, databases), session.may_create_roles())
