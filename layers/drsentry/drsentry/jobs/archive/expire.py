"""Expiry of one backup: every copy deleted, then the record marked `expired`.

Every version of the dump, its manifest and its roles object is deleted from the archive copy (if any), the
replica (in both `copy` and `crr` mode) and the primary bucket, in that order, so the record's
own location is the last to go; then the record becomes `expired` with the reason. Object
Lock is never bypassed: a backup whose primary copy is locked past now (the record's
`retain_until`) is not touched at all (StillLocked: reported as `locked`, expired by a run after
that date), and a delete S3 refuses raises DeleteRefused and the record stays as it was, to be
retried by the next run.

`expire_primary_copy` is the same for a monthly backup whose verified, locked archive copy serves
its slot alone: the replica and primary copies go, the record stays `completed` and says when
(`primary_expired_at`); a restore reads the archive copy.
"""

from __future__ import annotations

from drsentry.adapters.buckets import Bucket
from drsentry.core.errors import DrsentryError
from drsentry.core.gfs import is_archived
from drsentry.core.records import BackupRecord, ReplicaDetail, iso, parse_iso
from drsentry.jobs.runtime import Runtime


class StillLocked(DrsentryError):
    """The backup's primary copy is under Object Lock until a later date: nothing is deleted."""


def _refuse_if_locked(runtime: Runtime, record: BackupRecord) -> None:
    if record.retain_until and parse_iso(record.retain_until) > runtime.clock():
        raise StillLocked(
            f"under Object Lock ({record.lock_mode}) until {record.retain_until}: nothing deleted; "
            "a run after that date expires it"
        )


def expire_primary_copy(runtime: Runtime, record: BackupRecord, reason: str) -> str:
    """Delete the replica and primary copies of a backup its archive copy now serves alone."""
    _refuse_if_locked(runtime, record)
    places = _expire_replica_and_primary(runtime, record)
    runtime.catalog.update_backup(
        record.target, record.backup_id, {"primary_expired_at": iso(runtime.clock())}
    )
    return f"deleted from {', '.join(places)} ({reason}); the archive copy remains"


def expire_backup(runtime: Runtime, record: BackupRecord, reason: str) -> str:
    """Delete the backup's archive, replica and primary copies and mark it expired; where from."""
    _refuse_if_locked(runtime, record)
    places: list[str] = []
    if is_archived(record) and record.archive is not None:
        archive = record.archive
        _delete_versions(
            runtime.buckets.bucket(archive.bucket),
            record.all_keys()
            if record.databases
            else [archive.key or record.key, *_globals(record), archive.manifest_key or record.manifest_key],
        )
        # Recorded at once: should a later step be refused, the next run knows this copy is gone.
        deleted = archive.model_copy(update={"deleted_at": iso(runtime.clock())})
        runtime.catalog.update_backup(record.target, record.backup_id, {"archive": deleted.model_dump()})
        places.append("archive")
    places += _expire_replica_and_primary(runtime, record)
    runtime.catalog.update_backup(
        record.target,
        record.backup_id,
        {"status": "expired", "expired_at": iso(runtime.clock()), "expire_reason": reason},
    )
    return f"deleted from {', '.join(places)}"


def _expire_replica_and_primary(runtime: Runtime, record: BackupRecord) -> list[str]:
    places: list[str] = []
    replica = runtime.config.storage.replica
    # Both modes: S3 replication never replicates deletes of specific versions, so a
    # crr replica would otherwise keep every backup (and its personal data) forever.
    if replica is not None:
        detail = record.replica_detail or ReplicaDetail()
        _delete_versions(
            runtime.buckets.bucket(detail.bucket or replica.bucket, detail.region or replica.region),
            # The copy and S3 replication keep the source's keys.
            record.all_keys(),
        )
        places.append("replica")
    # Every database's dump and manifest too, for a backup of several; the backup's manifest last.
    primary_keys = record.all_keys()
    _delete_versions(runtime.buckets.bucket(record.bucket), primary_keys)
    places.append("primary")
    return places


def _globals(record: BackupRecord) -> list[str]:
    """The roles object's key (the same in every copy), if the backup has one."""
    return [record.globals.key] if record.globals is not None else []


def _delete_versions(bucket: Bucket, keys: list[str]) -> None:
    """Delete every version and delete marker of each key, in order: the manifest last, as it is
    what `catalog rebuild` would find. A version under Object Lock is refused (DeleteRefused),
    never forced."""
    for key in keys:
        bucket.delete_all_versions(key)
