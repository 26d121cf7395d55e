"""The verified archive copy of one backup: copy, check, lock, record.

A server-side managed copy (multipart `UploadPartCopy` above the threshold, so objects over
5 GB copy too) of the primary version that was checked against the catalog, into the archive
bucket in the configured storage class. The copy's size, storage class and SHA-256 are read
back and compared with the catalog; only then is Object Lock retention (`lock_days`,
`lock_mode`) put on that exact version and read back too. The manifest goes along in
STANDARD, locked the same way, so the catalog can be read (and the record re-created by hand)
without a restore. So does the roles object (a few kilobytes: a restore of the dump from the
archive needs no second Glacier restore for it), its SHA-256 read back before it is locked.
The record gets its `archive` sub-document only when all of this held.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from drsentry.adapters.buckets import SHA256_TAG, Bucket, CopyParts, MiB, ObjectHead
from drsentry.core.config import ArchiveConfig
from drsentry.core.errors import DrsentryError, StorageError
from drsentry.core.records import ArchiveCopy, BackupRecord, VerifiedBy, iso
from drsentry.jobs.archive.access import READABLE_CLASSES
from drsentry.jobs.runtime import Runtime

# Copies up to this size are one CopyObject; larger ones are parallel UploadPartCopy
# parts (s3transfer grows the part size so even a 5 TB object stays under 10,000 parts).
COPY_PARTS = CopyParts(threshold=256 * MiB, part_size=256 * MiB, concurrency=8)


class ArchiveFailed(DrsentryError):
    """A copy to the archive bucket failed or did not match the catalog."""


def archive_backup(runtime: Runtime, record: BackupRecord, now: datetime) -> str:
    """Make the verified (and locked) archive copy of one backup and record it; raises
    ArchiveFailed when it could not be made or did not match. Returns what was done."""
    archive = runtime.config.storage.archive
    if archive is None:
        raise ArchiveFailed("no storage.archive configured")
    return ArchiveCopier(runtime, archive, now).copy(record)


class ArchiveCopier:
    """Copies backups into the archive bucket of one configuration, locked from `now` on."""

    def __init__(self, runtime: Runtime, archive: ArchiveConfig, now: datetime) -> None:
        self.runtime = runtime
        self.archive = archive
        # The archive bucket is in the primary region.
        self.archive_bucket = runtime.buckets.bucket(archive.bucket)
        self.lock = bool(archive.lock_days)
        self.retain_until = (now + timedelta(days=archive.lock_days)).replace(microsecond=0)

    def copy(self, record: BackupRecord) -> str:
        archive = self.archive
        primary = self.runtime.buckets.bucket(record.bucket)
        # Every dump, each with its manifest (one per database of a backup of several); the
        # archive sub-document's version and check are the first dump's, as its key is.
        copied = [self._copy_dump(primary, dump) for dump in record.database_views()]
        version_id, verified_by = copied[0]
        for database in record.database_views() if record.databases else []:
            self._copy_manifest(primary, database)
        self._copy_manifest(primary, record)
        self._copy_globals(primary, record)
        copy = ArchiveCopy(
            bucket=archive.bucket,
            key=record.key,
            manifest_key=record.manifest_key,
            storage_class=archive.storage_class,
            lock_mode=archive.lock_mode if self.lock else None,
            retain_until=iso(self.retain_until) if self.lock else None,
            sha256=record.sha256,
            size_bytes=record.size_bytes,
            version_id=version_id,
            verified_by=verified_by,
            archived_at=iso(self.runtime.clock()),
        )
        self.runtime.catalog.update_backup(record.target, record.backup_id, {"archive": copy.model_dump()})
        locked = f", locked ({archive.lock_mode}) until {iso(self.retain_until)}" if self.lock else ""
        return (
            f"s3://{archive.bucket}/{record.key} in {archive.storage_class}{locked}; SHA-256 by {verified_by}"
        )

    def _copy_dump(self, primary: Bucket, record: BackupRecord) -> tuple[str | None, VerifiedBy]:
        """Copy the primary version that matches the catalog, check the copy, lock it.
        Returns the copy's version id and how its SHA-256 was checked."""
        source = primary.head(record.key)
        if source is None:
            raise ArchiveFailed(
                f"s3://{record.bucket}/{record.key}: primary copy is missing; nothing to archive"
            )
        if source.size_bytes != record.size_bytes:
            raise ArchiveFailed(
                f"s3://{record.bucket}/{record.key}: {source.size_bytes} bytes, the catalog says "
                f"{record.size_bytes}; not archiving a copy that does not match"
            )
        source_tags = primary.tags(record.key, source.version_id)
        source_sha256 = source_tags.get(SHA256_TAG)
        if source_sha256 and source_sha256 != record.sha256:
            raise ArchiveFailed(
                f"s3://{record.bucket}/{record.key}: SHA-256 tag {source_sha256} differs from "
                f"the catalog's {record.sha256}; not archiving"
            )
        # The source's own tags only: a SHA-256 made up here would prove nothing later.
        # Exactly the version that was just checked against the catalog is copied.
        metadata = {**source.metadata, "archived-from": f"s3://{record.bucket}/{record.key}"}
        self.archive_bucket.copy_in(
            primary,
            source,
            storage_class=self.archive.storage_class,
            metadata=metadata,
            tags=source_tags,
            parts=COPY_PARTS,
        )
        copy = self.archive_bucket.head(record.key)
        version_id = copy.version_id if copy is not None else None
        try:
            verified_by = self._check_copy(record, copy, source_sha256)
        except ArchiveFailed as exc:
            raise ArchiveFailed(f"{exc}{_discard(self.archive_bucket, record.key, version_id)}") from exc
        if self.lock:
            self._lock(record.key, version_id)
        return version_id, verified_by

    def _copy_manifest(self, primary: Bucket, record: BackupRecord) -> None:
        """The manifest stays in STANDARD: readable without a restore, so what an archived
        dump holds can be read from the archive bucket alone."""
        manifest_source = primary.head(record.manifest_key)
        if manifest_source is None:
            raise ArchiveFailed(f"s3://{record.bucket}/{record.manifest_key}: manifest is missing")
        self.archive_bucket.copy_in(primary, manifest_source, storage_class="STANDARD", parts=COPY_PARTS)
        manifest_copy = self.archive_bucket.head(record.manifest_key)
        manifest_version = manifest_copy.version_id if manifest_copy is not None else None
        manifest = self.archive_bucket.get_json(record.manifest_key)
        if manifest.get("sha256") != record.sha256 or manifest.get("backup_id") != record.backup_id:
            where = f"s3://{self.archive.bucket}/{record.manifest_key}"
            raise ArchiveFailed(
                f"{where}: the archived manifest does not describe backup {record.backup_id}"
                + _discard(self.archive_bucket, record.manifest_key, manifest_version)
            )
        if self.lock:
            self._lock(record.manifest_key, manifest_version)

    def _copy_globals(self, primary: Bucket, record: BackupRecord) -> None:
        """The roles object, in STANDARD beside the manifest, checked against the record and locked."""
        if record.globals is None:
            return  # taken before roles were backed up
        key = record.globals.key
        source = primary.head(key)
        if source is None:
            raise ArchiveFailed(f"s3://{record.bucket}/{key}: the backup's roles object is missing")
        tags = primary.tags(key, source.version_id)
        self.archive_bucket.copy_in(
            primary, source, storage_class="STANDARD", metadata=source.metadata, tags=tags, parts=COPY_PARTS
        )
        copy = self.archive_bucket.head(key)
        version_id = copy.version_id if copy is not None else None
        digest = hashlib.sha256()
        for chunk in self.archive_bucket.iter_chunks(key):
            digest.update(chunk)
        if digest.hexdigest() != record.globals.sha256:
            raise ArchiveFailed(
                f"s3://{self.archive.bucket}/{key}: SHA-256 {digest.hexdigest()} differs from the "
                f"catalog's {record.globals.sha256}" + _discard(self.archive_bucket, key, version_id)
            )
        if self.lock:
            self._lock(key, version_id)

    def _check_copy(
        self, record: BackupRecord, copy: ObjectHead | None, source_sha256: str | None
    ) -> VerifiedBy:
        """The archive copy's size and class against the catalog, and its SHA-256: the tag of
        the exact source version copied server-side (already matched to the catalog), or,
        without one, read from the copy. Returns how the hash was checked."""
        archive = self.archive
        where = f"s3://{archive.bucket}/{record.key}"
        if copy is None:
            raise ArchiveFailed(f"{where}: not there after the copy")
        if copy.size_bytes != record.size_bytes:
            raise ArchiveFailed(
                f"{where}: {copy.size_bytes} bytes after the copy, the catalog says {record.size_bytes}"
            )
        if copy.storage_class != archive.storage_class:
            raise ArchiveFailed(f"{where}: stored as {copy.storage_class}, not {archive.storage_class}")
        if source_sha256 == record.sha256:
            return "tag"
        if copy.storage_class not in READABLE_CLASSES:
            raise ArchiveFailed(
                f"{where}: no SHA-256 tag, and {copy.storage_class} cannot be read to check it"
            )
        digest = hashlib.sha256()
        for chunk in self.archive_bucket.iter_chunks(record.key):
            digest.update(chunk)
        if digest.hexdigest() != record.sha256:
            raise ArchiveFailed(
                f"{where}: SHA-256 {digest.hexdigest()} differs from the catalog's {record.sha256}"
            )
        return "read"

    def _lock(self, key: str, version_id: str | None) -> None:
        """Put Object Lock retention on the verified version, and read it back.

        The lock goes on after the check, not with the copy: in COMPLIANCE mode nobody can
        delete a locked object before its date, so a bad copy locked at once would stay,
        billed, for years. A bucket default retention that already covers the date is kept.
        """
        mode, retain_until = self.archive.lock_mode, self.retain_until
        head = self.archive_bucket.head(key, version_id)
        if head is not None and _lock_holds(head, mode, retain_until):
            return
        try:
            self.archive_bucket.put_retention(key, version_id, mode=mode, until=retain_until)
        except StorageError as exc:
            raise ArchiveFailed(f"{exc} (is Object Lock enabled on the archive bucket?)") from exc
        again = self.archive_bucket.head(key, version_id)
        if again is None or not _lock_holds(again, mode, retain_until):
            where = f"s3://{self.archive.bucket}/{key}"
            raise ArchiveFailed(f"{where}: Object Lock retention until {iso(retain_until)} is not in place")


def _discard(bucket: Bucket, key: str, version_id: str | None) -> str:
    """Remove a copy that failed its check (it is not locked yet); what happened, for the message."""
    if not version_id:
        return ""
    try:
        bucket.delete_version(key, version_id)
    except StorageError as exc:
        return f"; the bad copy could not be removed: {exc}"
    return "; the bad copy was removed"


def _lock_holds(head: ObjectHead, mode: str, retain_until: datetime) -> bool:
    until = head.retain_until
    if head.retention_mode != mode or until is None:
        return False
    # Retention dates come back rounded; a second of slack never shortens a 1-day lock.
    return until.timestamp() >= retain_until.timestamp() - 1
