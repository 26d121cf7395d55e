"""What a failed or interrupted backup leaves in the primary bucket, checked the same way everywhere.

The backup role may not destroy a version (only add a delete marker), so a failed run withdraws
what it stored: right after it, no reader of the bucket sees an object or an open upload, and
every version left behind is hidden behind a delete marker and not locked. The next archive run
purges them: then no version and no marker is left at all.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from drsentry.jobs.archive.job import archive_target


def _locked(s3: Any, bucket: str, key: str, version_id: str) -> bool:
    # HEAD of the version: moto's GetObjectRetention fails on a key whose current version is a
    # delete marker; a version without a lock has no ObjectLockRetainUntilDate.
    head = s3.head_object(Bucket=bucket, Key=key, VersionId=version_id)
    until = head.get("ObjectLockRetainUntilDate")
    return until is not None and until > datetime.now(UTC)


def assert_withdrawn(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """No current object and no multipart upload under `prefix`; every version left is hidden behind
    a delete marker and not locked. The keys hidden."""
    assert s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0) == 0
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []
    listing = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    hidden = {marker["Key"] for marker in listing.get("DeleteMarkers", []) if marker["IsLatest"]}
    for version in listing.get("Versions", []):
        assert version["Key"] in hidden, f"{version['Key']} is left visible"
        assert not _locked(s3, bucket, version["Key"], version["VersionId"]), f"{version['Key']} is locked"
    return sorted(hidden)


def assert_nothing_at_all(s3: Any, bucket: str, prefix: str = "") -> None:
    """No version, no delete marker and no upload under `prefix`."""
    listing = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    assert listing.get("Versions", []) == []
    assert listing.get("DeleteMarkers", []) == []
    assert s3.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", []) == []


def assert_withdrawn_then_purged(runtime: Any, target: str, prefix: str = "") -> tuple[list[str], Any]:
    """A failed run's objects withdrawn, then gone for good after one archive run: the keys that
    were hidden, and the archive run's report."""
    s3, bucket = runtime.clients.s3(), runtime.config.storage.bucket
    hidden = assert_withdrawn(s3, bucket, prefix)
    report = archive_target(runtime, target)
    assert_nothing_at_all(s3, bucket, prefix)
    return hidden, report
