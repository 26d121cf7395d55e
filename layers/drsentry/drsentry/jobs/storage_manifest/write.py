"""Writing the manifests of a completed backup's application buckets beside its dump.

Listing pages of 1,000 keys are compressed and handed to a multipart upload as they arrive,
so memory stays flat whether the bucket holds a thousand keys or a hundred million. A bucket
whose manifest cannot be written gets an entry with its error; the database backup stands.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from drsentry.adapters.buckets import Bucket, Buckets
from drsentry.core.config import BucketConfig
from drsentry.core.deadlines import Remaining, no_deadline
from drsentry.core.errors import CatalogError, StorageError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, StorageManifestEntry
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.listing import bucket_versioned, iter_current_objects
from drsentry.jobs.storage_manifest.rules import MANIFEST_FORMAT, storage_manifest_key

# JSON lines are gathered to this size before compressing: fewer, better-compressed blocks.
COMPRESS_BATCH = 256 * 1024
# Stop listing this long before the function's limit so the record and the notice still get written.
TIME_MARGIN_SECONDS = 60.0
TIME_CHECK_EVERY = 1000


@dataclass
class ManifestTotals:
    key: str
    versioned: bool
    objects: int
    bytes: int
    sha256: str


def write_manifest(
    buckets: Buckets,
    source: BucketConfig,
    dest: Bucket,
    dest_key: str,
    *,
    metadata: dict[str, str] | None = None,
    remaining_seconds: Remaining = no_deadline,
) -> ManifestTotals:
    """List `source` and stream its manifest to `dest_key` in `dest`. On any error the
    multipart upload is aborted, so no partial manifest is ever mistaken for a whole one."""
    source_bucket = buckets.bucket(source.bucket, source.region)
    versioned = bucket_versioned(source_bucket)
    object_metadata = {
        "format": MANIFEST_FORMAT,
        "source-bucket": source.bucket,
        "source-region": source.region,
        "source-prefix": source.prefix,
        "versioned": "true" if versioned else "false",
        **(metadata or {}),
    }
    writer = dest.writer(dest_key, metadata=object_metadata)
    compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: a gzip wrapper
    batch = bytearray()
    objects = total_bytes = 0
    try:
        for row in iter_current_objects(source_bucket, source.prefix, versioned):
            batch += row.line()
            objects += 1
            total_bytes += row.size
            if len(batch) >= COMPRESS_BATCH:
                writer.write(compressor.compress(batch))
                batch.clear()
            if objects % TIME_CHECK_EVERY == 0:
                left = remaining_seconds()
                if left is not None and left < TIME_MARGIN_SECONDS:
                    raise StorageError(
                        f"s3://{source.bucket}/{source.prefix}: listing stopped after {objects:,} objects, "
                        f"{left:.0f}s of run time left"
                    )
        writer.write(compressor.compress(batch) + compressor.flush())
        stored = writer.complete()
    except BaseException:
        writer.abort()
        raise
    return ManifestTotals(dest_key, versioned, objects, total_bytes, stored.sha256)


def write_storage_manifests(runtime: Runtime, record: BackupRecord) -> BackupRecord:
    """The manifests of a completed backup's target buckets; the record returned (and stored)
    with its ``storage`` entries. Never raises for a bucket: its entry carries the error."""
    target = runtime.config.target(record.target)
    if not target.storage or record.status != "completed":
        return record
    entries = [_bucket_entry(runtime, record, bucket) for bucket in target.storage]
    stored = [entry.model_dump() for entry in entries]
    try:
        runtime.catalog.update_backup(record.target, record.backup_id, {"storage": stored})
    except CatalogError as exc:
        # The manifests are written; without their totals in the catalog verify cannot compare them.
        logger.error("storage totals not recorded", extra={"backup_id": record.backup_id, "error": str(exc)})
        unrecorded = f"manifest written, but the catalog was not updated: {exc}"
        entries = [entry.model_copy(update={"error": entry.error or unrecorded}) for entry in entries]
    return record.model_copy(update={"storage": entries})


def _bucket_entry(runtime: Runtime, record: BackupRecord, bucket: BucketConfig) -> StorageManifestEntry:
    key = storage_manifest_key(runtime.config.storage.prefix, record.target, record.backup_id, bucket.bucket)
    entry = StorageManifestEntry(bucket=bucket.bucket, region=bucket.region, prefix=bucket.prefix, key=key)
    try:
        totals = write_manifest(
            runtime.buckets,
            bucket,
            runtime.buckets.bucket(record.bucket),
            key,
            metadata={"backup-id": record.backup_id, "target": record.target},
            remaining_seconds=runtime.remaining_seconds,
        )
    except StorageError as exc:
        logger.error(
            "storage manifest failed",
            extra={"backup_id": record.backup_id, "bucket": bucket.bucket, "error": str(exc)},
        )
        return entry.model_copy(update={"error": str(exc)})
    entry = entry.model_copy(
        update={
            "versioned": totals.versioned,
            "objects": totals.objects,
            "bytes": totals.bytes,
            "sha256": totals.sha256,
        }
    )
    logger.info("storage manifest written", extra={"backup_id": record.backup_id, **entry.model_dump()})
    return entry
