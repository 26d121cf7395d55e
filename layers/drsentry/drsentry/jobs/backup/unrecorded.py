"""Dumps in the bucket that no `completed` record shows.

A backup stores its dump, then its roles object and manifest, then writes its record. A run
killed between the upload and the record (SIGKILL, ECS's kill 30 s after SIGTERM, an OOM kill,
Lambda's hard timeout) leaves a whole, tagged dump that `backups list`, `status`, verify and
retention never see. `catalog rebuild` recreates the record from the manifest when there is
one; a dump without its manifest cannot be described (no row counts, versions or roles) and
is reported for a person to decide. Both `catalog rebuild` and every archive run list them, so
none stays invisible.

A backup running right now has stored its dump before its record: while the target's backup
lock is held, an unrecorded dump newer than every record is taken to be that run's and is
not reported (the next run reports it, should that run never record it).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from drsentry.jobs.backup.rules import DUMP_SUFFIX, MANIFEST_SUFFIX, backup_id_of, objects_prefix
from drsentry.jobs.runtime import Runtime


class UnrecordedBackup(BaseModel):
    """A stored dump no completed record names."""

    backup_id: str
    key: str
    size_bytes: int
    # The manifest beside it: `drsentry catalog rebuild` can recreate its record from it.
    manifest_key: str | None = None
    # The record that exists for this backup id, if any (a `failed` one whose cleanup failed).
    record_status: str | None = None

    def reason(self) -> str:
        if self.record_status is not None:
            where = f"its record says {self.record_status}"
        elif self.manifest_key is not None:
            where = "no record; its manifest is there (drsentry catalog rebuild recreates the record)"
        else:
            where = (
                "no record and no manifest: the run stopped between the upload and its record; "
                "restore it by hand or delete it"
            )
        return f"dump stored, {where}"


@dataclass(frozen=True)
class _Listing:
    # (backup id, dump key, size): a backup of several databases has one dump per database.
    dumps: list[tuple[str, str, int]]
    manifests: dict[str, str]  # backup id -> the backup's own manifest key


def _list(runtime: Runtime, target: str) -> _Listing:
    storage = runtime.config.storage
    dumps: list[tuple[str, str, int]] = []
    manifests: dict[str, str] = {}
    for entry in runtime.buckets.bucket(storage.bucket).iter_objects(f"{storage.prefix}{target}/"):
        # A database's dump of a backup of several sits in a folder named after the backup.
        parent = entry.key.rsplit("/", 2)[-2] if entry.key.count("/") >= 2 else ""
        backup_id = backup_id_of(entry.key) or backup_id_of(parent)
        if backup_id is None or not entry.key.startswith(objects_prefix(storage.prefix, target, backup_id)):
            continue
        if entry.key.endswith(DUMP_SUFFIX):
            dumps.append((backup_id, entry.key, entry.size_bytes))
        elif entry.key.endswith(MANIFEST_SUFFIX):
            manifests[backup_id] = entry.key
    return _Listing(dumps, manifests)


def find_unrecorded(runtime: Runtime, target: str) -> list[UnrecordedBackup]:
    """The target's stored dumps that no completed record names, oldest first."""
    listing = _list(runtime, target)
    statuses: dict[str, str] = {}
    recorded_keys: set[str] = set()
    for record in runtime.catalog.iter_backups(target):
        statuses[record.backup_id] = record.status
        if record.status == "completed":
            recorded_keys.update(stored.key for stored in record.objects() if stored.kind == "dump")
    unrecorded = [
        UnrecordedBackup(
            backup_id=backup_id,
            key=key,
            size_bytes=size,
            manifest_key=listing.manifests.get(backup_id),
            record_status=statuses.get(backup_id),
        )
        for backup_id, key, size in sorted(listing.dumps)
        if key not in recorded_keys
    ]
    if unrecorded and _running_backups_own(unrecorded[-1], statuses, runtime, target):
        running = unrecorded[-1].backup_id
        unrecorded = [dump for dump in unrecorded if dump.backup_id != running]
    return unrecorded


def _running_backups_own(
    newest: UnrecordedBackup, statuses: dict[str, str], runtime: Runtime, target: str
) -> bool:
    """Whether the newest unrecorded dump is newer than every record while a backup runs: that
    run's own, stored a moment before its record."""
    newer_than_records = newest.backup_id > max(statuses, default="")
    return newer_than_records and runtime.catalog.locks.held(target, "backup")
