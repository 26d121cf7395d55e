"""Object Lock on a backup's objects in the primary bucket and the replica.

A completed backup's dump, manifest and roles object are locked until `retain_until` (the end
of the longest GFS slot the primary copy serves, core/gfs.py) in the configured mode, on the
exact versions that are current, and read back. A lock is only ever set or extended: a version
already locked until the date or later is left as it is, so a later run can never shorten it
(S3 would refuse anyway, short of s3:BypassGovernanceRetention, which no drsentry role holds).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from drsentry.adapters.buckets import Bucket
from drsentry.core.errors import StorageError
from drsentry.core.records import BackupRecord, iso

LockMode = Literal["GOVERNANCE", "COMPLIANCE"]


def backup_keys(record: BackupRecord) -> list[str]:
    """The backup's objects: the manifests and the roles object first, the dumps last, so that a
    lock that fails half-way leaves the dumps themselves removable."""
    stored = record.objects()
    roles = [o.key for o in stored if o.kind == "globals"]
    dumps = [o.key for o in stored if o.kind == "dump"]
    return [*record.manifest_keys(), *roles, *dumps]


def lock_objects(bucket: Bucket, keys: list[str], *, mode: LockMode, until: datetime) -> None:
    """Lock the current version of every key until `until` (never earlier than it already is) and
    read each lock back; StorageError naming the object when one is not in place."""
    for key in keys:
        head = bucket.head(key)
        if head is None:
            raise StorageError(f"s3://{bucket.name}/{key}: not there to lock")
        if _locked_until(head.retain_until, until):
            continue
        bucket.put_retention(key, head.version_id, mode=mode, until=until)
        again = bucket.head(key, head.version_id)
        if again is None or not _locked_until(again.retain_until, until):
            raise StorageError(
                f"s3://{bucket.name}/{key}: Object Lock retention until {iso(until)} is not in place "
                "(is Object Lock enabled on the bucket?)"
            )


def _locked_until(current: datetime | None, until: datetime) -> bool:
    # Retention dates come back rounded to the second.
    return current is not None and current.timestamp() >= until.timestamp() - 1
