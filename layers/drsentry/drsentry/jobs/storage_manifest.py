"""Storage-bucket manifests: the application's buckets (uploads, invoices, photos) beside its database.

On the backup schedule, after the database backup, every bucket of ``targets[].storage`` is
listed and its manifest streamed into the backup bucket beside the dump, at
``{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}.storage.{bucket}.jsonl.gz``: gzip-compressed
JSON Lines, one object a line::

    {"key": "avatars/42.png", "size": 5120, "etag": "9b2c...", "last_modified": "2026-11-22T17:59:01Z",
     "storage_class": "STANDARD", "version_id": "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"}

A versioned bucket is listed with ``ListObjectVersions`` and only current versions are
written (``version_id`` is what a restore brings back); an unversioned one with
``ListObjectsV2`` (``version_id`` null). Lines are in S3's key order. Listing pages of 1,000
keys are compressed and handed to a multipart upload as they arrive, so memory stays flat
whether the bucket holds a thousand keys or a hundred million. The totals (objects, bytes)
and the manifest's SHA-256 go into the backup record's ``storage`` list; a manifest that
cannot be written is recorded there with its error and never fails the database backup.

Verify compares a backup's manifest with the previous one of the same bucket
(``compare_storage``): a drop in objects or bytes beyond ``verify.storage_drop_tolerance``
fails, and a random sample of the previous manifest's keys is checked to still exist or,
in a versioned bucket, to keep the listed version (recoverable). ``restore_list`` joins a
manifest with the bucket's versions, both in key order, to say per key what recreating the
bucket as it was would need.
"""

from __future__ import annotations

import hashlib
import json
import random
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from typing import IO, Any, Literal

from drsentry.adapters.buckets import Bucket, Buckets, ObjectEntry, VersionEntry
from drsentry.core.config import BucketConfig
from drsentry.core.deadlines import no_deadline
from drsentry.core.errors import BadInput, CatalogError, StorageError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord
from drsentry.jobs.runtime import Runtime

MANIFEST_FORMAT = "drsentry-storage/1"
MANIFEST_SUFFIX = ".jsonl.gz"
# JSON lines are gathered to this size before compressing: fewer, better-compressed blocks.
COMPRESS_BATCH = 256 * 1024
# Stop listing this long before the function's limit so the record and the notice still get written.
TIME_MARGIN_SECONDS = 60.0
TIME_CHECK_EVERY = 1000
SAMPLE_KEYS = 100
HEAD_CONCURRENCY = 8
# How many older backups to look through for the previous manifest of a bucket.
PREVIOUS_LOOKBACK = 200
# Keys named in a check's detail; the rest are counted.
NAMED_KEYS = 5
CHECK_PREFIX = "storage: "

Remaining = Callable[[], float | None]


def storage_manifest_key(prefix: str, target: str, backup_id: str, bucket: str) -> str:
    """Beside the dump: `{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}.storage.{bucket}.jsonl.gz`."""
    day = f"{backup_id[0:4]}/{backup_id[4:6]}/{backup_id[6:8]}"
    return f"{prefix}{target}/{day}/{backup_id}.storage.{bucket}{MANIFEST_SUFFIX}"


def storage_check_name(bucket: BucketConfig) -> str:
    return f"{CHECK_PREFIX}{bucket.bucket}"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


# Rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestRow:
    key: str
    size: int
    etag: str
    last_modified: str | None
    storage_class: str
    version_id: str | None

    def line(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def _row(entry: ObjectEntry | VersionEntry, version_id: str | None) -> ManifestRow:
    return ManifestRow(
        key=entry.key,
        size=entry.size_bytes,
        etag=entry.etag,
        last_modified=_iso(entry.last_modified),
        storage_class=entry.storage_class,
        version_id=version_id,
    )


def bucket_versioned(bucket: Bucket) -> bool:
    """Versioning enabled or suspended: either way earlier versions may exist to restore from."""
    return bucket.versioning() in {"Enabled", "Suspended"}


def iter_current_objects(bucket: Bucket, prefix: str, versioned: bool) -> Iterator[ManifestRow]:
    """Every current object under `prefix`, in S3's key order, one listing page at a time."""
    if not versioned:
        for entry in bucket.iter_objects(prefix):
            yield _row(entry, None)
        return
    for version in bucket.iter_versions(prefix):
        # A key whose latest entry is a delete marker is deleted: not in the manifest.
        if version.is_latest and not version.delete_marker:
            yield _row(version, version.version_id)


def iter_manifest(bucket: Bucket, key: str, expected_sha256: str | None = None) -> Iterator[ManifestRow]:
    """The rows of a stored manifest, streamed; ends by checking the object's SHA-256 when given."""
    where = f"s3://{bucket.name}/{key}"
    digest = hashlib.sha256()
    # 32 + MAX_WBITS: a gzip header is expected and checked.
    decompressor = zlib.decompressobj(32 + zlib.MAX_WBITS)
    pending = b""
    number = 0

    def parse(lines: list[bytes]) -> Iterator[ManifestRow]:
        nonlocal number
        for line in lines:
            number += 1
            if not line.strip():
                continue
            try:
                fields = json.loads(line)
                yield ManifestRow(
                    key=str(fields["key"]),
                    size=int(fields["size"]),
                    etag=str(fields.get("etag") or ""),
                    last_modified=fields.get("last_modified"),
                    storage_class=str(fields.get("storage_class") or "STANDARD"),
                    version_id=fields.get("version_id"),
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise StorageError(f"{where}: line {number} is not a manifest row ({exc})") from exc

    try:
        for chunk in bucket.iter_chunks(key):
            digest.update(chunk)
            lines = (pending + decompressor.decompress(chunk)).split(b"\n")
            pending = lines.pop()
            yield from parse(lines)
        lines = (pending + decompressor.flush()).split(b"\n")
    except zlib.error as exc:
        raise StorageError(f"{where}: not a gzip-compressed manifest ({exc})") from exc
    if not decompressor.eof:
        raise StorageError(f"{where}: the manifest is truncated (gzip stream incomplete)")
    yield from parse(lines)
    if expected_sha256 and digest.hexdigest() != expected_sha256:
        raise StorageError(
            f"{where}: SHA-256 {digest.hexdigest()} differs from the backup record's {expected_sha256}: "
            "the manifest was altered"
        )


# Writing ---------------------------------------------------------------------------------------


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
    try:
        runtime.catalog.update_backup(record.target, record.backup_id, {"storage": entries})
    except CatalogError as exc:
        # The manifests are written; without their totals in the catalog verify cannot compare them.
        logger.error("storage totals not recorded", extra={"backup_id": record.backup_id, "error": str(exc)})
        for entry in entries:
            entry["error"] = entry["error"] or f"manifest written, but the catalog was not updated: {exc}"
    return record.model_copy(update={"storage": entries})


def _bucket_entry(runtime: Runtime, record: BackupRecord, bucket: BucketConfig) -> dict[str, Any]:
    key = storage_manifest_key(runtime.config.storage.prefix, record.target, record.backup_id, bucket.bucket)
    entry: dict[str, Any] = {
        "bucket": bucket.bucket,
        "region": bucket.region,
        "prefix": bucket.prefix,
        "key": key,
        "versioned": None,
        "objects": None,
        "bytes": None,
        "sha256": None,
        "error": None,
    }
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
        entry["error"] = str(exc)
        logger.error(
            "storage manifest failed",
            extra={"backup_id": record.backup_id, "bucket": bucket.bucket, "error": str(exc)},
        )
        return entry
    entry.update(versioned=totals.versioned, objects=totals.objects, bytes=totals.bytes, sha256=totals.sha256)
    logger.info("storage manifest written", extra={"backup_id": record.backup_id, **entry})
    return entry


def storage_problems(record: BackupRecord) -> list[str]:
    """One line per bucket whose manifest failed: what the backup notice warns about."""
    entries = record.storage or []
    return [f"{entry.get('bucket')}: {entry['error']}" for entry in entries if entry.get("error")]


# Verify ----------------------------------------------------------------------------------------

CheckOutcome = Literal["passed", "failed", "skipped"]


@dataclass
class SampleReport:
    checked: int = 0
    present: int = 0
    changed: int = 0
    recoverable: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.checked:
            return "the previous manifest lists no keys to sample"
        missing = len(self.recoverable) + len(self.lost)
        text = f"{self.checked} sampled keys of the previous manifest: {self.present} present"
        if self.changed:
            text += f" ({self.changed} changed since)"
        if missing:
            text += f", {missing} missing"
            if self.recoverable:
                recoverable = self.recoverable
                text += f": {len(recoverable)} recoverable from a prior version ({_names(recoverable)})"
            if self.lost:
                text += f"{';' if self.recoverable else ':'} {len(self.lost)} lost ({_names(self.lost)})"
        return text


def _names(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:NAMED_KEYS])
    return shown + (f" and {len(keys) - NAMED_KEYS} more" if len(keys) > NAMED_KEYS else "")


def _entry(record: BackupRecord, bucket: str) -> dict[str, Any] | None:
    return next((entry for entry in record.storage or [] if entry.get("bucket") == bucket), None)


def _previous_manifest(
    runtime: Runtime, backup: BackupRecord, bucket: str
) -> tuple[BackupRecord, dict[str, Any]] | None:
    for seen, record in enumerate(runtime.catalog.iter_backups(backup.target)):
        if seen >= PREVIOUS_LOOKBACK:
            break
        if record.status != "completed" or record.backup_id >= backup.backup_id:
            continue
        entry = _entry(record, bucket)
        if entry is not None and not entry.get("error") and entry.get("objects") is not None:
            return record, entry
    return None


def _change(before: int, after: int) -> float:
    return 0.0 if before == 0 else (after - before) / before


def reservoir_sample(rows: Iterator[ManifestRow], size: int, rng: random.Random) -> list[ManifestRow]:
    """`size` rows chosen uniformly from a stream of unknown length, holding only `size` of them."""
    sample: list[ManifestRow] = []
    for seen, row in enumerate(rows):
        if seen < size:
            sample.append(row)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                sample[slot] = row
    return sample


def check_sample(bucket: Bucket, rows: list[ManifestRow], versioned: bool) -> SampleReport:
    """Does each sampled key still exist, or (versioned) keep the version the manifest listed?
    (A delete marker HEADs as no object, by key or by version.)"""

    def judge(row: ManifestRow) -> tuple[ManifestRow, str]:
        current = bucket.head(row.key)
        if current is not None:
            return row, "present" if current.etag == row.etag else "changed"
        if versioned and row.version_id and bucket.head(row.key, row.version_id) is not None:
            return row, "recoverable"
        return row, "lost"

    report = SampleReport(checked=len(rows))
    with ThreadPoolExecutor(max_workers=HEAD_CONCURRENCY, thread_name_prefix="storage-head") as pool:
        for row, verdict in pool.map(judge, rows):
            if verdict in {"present", "changed"}:
                report.present += 1
                report.changed += verdict == "changed"
            elif verdict == "recoverable":
                report.recoverable.append(row.key)
            else:
                report.lost.append(row.key)
    return report


def compare_storage(
    runtime: Runtime,
    backup: BackupRecord,
    bucket: BucketConfig,
    tolerance: float,
    rng: random.Random | None = None,
) -> tuple[CheckOutcome, str]:
    """The `storage: BUCKET` check of a verification: (outcome, detail)."""
    current = _entry(backup, bucket.bucket)
    if current is None:
        why = "taken before the bucket was configured?"
        return "skipped", f"backup {backup.backup_id} has no manifest of {bucket.bucket} ({why})"
    if current.get("error") or current.get("objects") is None:
        error = current.get("error")
        return "failed", f"no manifest of {bucket.bucket} with backup {backup.backup_id}: {error}"
    objects, size = int(current["objects"]), int(current["bytes"])
    now = f"{objects:,} objects, {human_size(size)}"
    found = _previous_manifest(runtime, backup, bucket.bucket)
    if found is None:
        return "skipped", f"{now}; no earlier manifest of {bucket.bucket} to compare with"
    previous, before = found
    before_objects, before_size = int(before["objects"]), int(before["bytes"])
    object_change, size_change = _change(before_objects, objects), _change(before_size, size)
    dropped = -object_change > tolerance or -size_change > tolerance
    counts = (
        f"objects {before_objects:,} -> {objects:,} ({object_change:+.1%}), "
        f"bytes {human_size(before_size)} -> {human_size(size)} ({size_change:+.1%}) "
        f"since backup {previous.backup_id}; "
        f"a drop of more than {tolerance:.0%} fails"
    )
    if dropped:
        counts = f"DROP beyond tolerance (mass deletion?): {counts}"
    try:
        rows = iter_manifest(
            runtime.buckets.bucket(previous.bucket), str(before["key"]), before.get("sha256")
        )
        sample = reservoir_sample(rows, SAMPLE_KEYS, rng or random.Random())
        report = check_sample(
            runtime.buckets.bucket(bucket.bucket, str(before.get("region") or bucket.region)),
            sample,
            bool(before.get("versioned")),
        )
    except StorageError as exc:
        return "failed", f"{counts}; the previous manifest could not be checked: {exc}"
    return ("failed" if dropped else "passed"), f"{counts}; {report.describe()}"


# Restore list ------------------------------------------------------------------------------------

RestoreAction = Literal["current", "restore", "missing"]


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the bucket holds for one key now."""

    key: str
    current_version: str | None
    current_etag: str | None
    versions: dict[str, str]  # version id -> ETag, delete markers excluded


@dataclass(frozen=True)
class ManifestSource:
    """A stored storage manifest and the bucket it describes."""

    manifest_bucket: str
    manifest_key: str
    bucket: str
    region: str
    prefix: str
    versioned: bool
    backup_id: str | None = None
    sha256: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.manifest_bucket}/{self.manifest_key}"


def iter_key_states(bucket: Bucket, prefix: str, versioned: bool) -> Iterator[KeyState]:
    """The bucket's keys in S3's key order with their versions, one key at a time."""
    if not versioned:
        for row in iter_current_objects(bucket, prefix, versioned=False):
            yield KeyState(row.key, None, row.etag, {})
        return
    for key, group in groupby(bucket.iter_versions(prefix), key=lambda entry: entry.key):
        current_version = current_etag = None
        versions: dict[str, str] = {}
        for entry in group:
            if entry.delete_marker:
                continue
            versions[entry.version_id] = entry.etag
            if entry.is_latest:
                current_version, current_etag = entry.version_id, entry.etag
        yield KeyState(key, current_version, current_etag, versions)


def judge_key(
    row: ManifestRow, state: KeyState | None, versioned: bool
) -> tuple[RestoreAction, str | None, str]:
    """(action, version id to restore, note) for one manifest row against the bucket now."""
    if state is None:
        note = "every version is gone" if versioned else "deleted (bucket not versioned)"
        return "missing", None, note
    if versioned and row.version_id:
        if state.current_version == row.version_id:
            return "current", row.version_id, ""
        if row.version_id in state.versions:
            why = "a newer version replaced it" if state.current_version else "deleted (delete marker)"
            return "restore", row.version_id, why
        return "missing", None, f"version {row.version_id} is gone"
    if state.current_etag == row.etag:
        return "current", None, ""
    note = "overwritten (bucket not versioned)" if state.current_etag else "deleted (bucket not versioned)"
    return "missing", None, note


@dataclass
class RestoreList:
    source: ManifestSource
    # Keys needing action, one JSON object a line: the caller's file (a SpooledTemporaryFile keeps
    # a few MB in memory and the rest on disk, so a bucket of millions of lost keys still fits).
    spool: IO[str]
    counts: dict[str, int] = field(default_factory=lambda: {"current": 0, "restore": 0, "missing": 0})
    bytes_to_restore: int = 0

    def actions(self) -> Iterator[dict[str, Any]]:
        self.spool.seek(0)
        for line in self.spool:
            yield json.loads(line)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def restore_list(runtime: Runtime, source: ManifestSource, spool: IO[str]) -> RestoreList:
    """Join the manifest with the bucket's versions (both in key order, so memory stays flat)."""
    result = RestoreList(source, spool)
    bucket = runtime.buckets.bucket(source.bucket, source.region)
    states = iter_key_states(bucket, source.prefix, source.versioned)
    state = next(states, None)
    previous_key: str | None = None
    manifest_bucket = runtime.buckets.bucket(source.manifest_bucket)
    for row in iter_manifest(manifest_bucket, source.manifest_key, source.sha256):
        if previous_key is not None and row.key <= previous_key:
            raise StorageError(f"{source.url}: keys out of S3 order at {row.key!r}; not a drsentry manifest")
        previous_key = row.key
        while state is not None and state.key < row.key:
            state = next(states, None)  # created after the manifest: nothing to recreate
        match = state if state is not None and state.key == row.key else None
        action, version_id, note = judge_key(row, match, source.versioned)
        result.counts[action] += 1
        if action == "current":
            continue
        if action == "restore":
            result.bytes_to_restore += row.size
        document = {"key": row.key, "action": action, "version_id": version_id, "size": row.size}
        result.spool.write(json.dumps({**document, "note": note}) + "\n")
    return result


def resolve_manifest(runtime: Runtime, manifest: str, bucket: str | None) -> ManifestSource:
    """`s3://BUCKET/KEY` of a storage manifest, or a backup id (with `bucket` when it has several)."""
    if manifest.startswith("s3://"):
        manifest_bucket, _, key = manifest.removeprefix("s3://").partition("/")
        if not manifest_bucket or not key:
            raise BadInput(f"{manifest}: expected s3://BUCKET/KEY of a storage manifest")
        head = runtime.buckets.bucket(manifest_bucket).head(key)
        if head is None:
            raise BadInput(f"{manifest}: no such object")
        metadata = head.metadata
        if metadata.get("format") != MANIFEST_FORMAT:
            raise BadInput(f"{manifest}: not a drsentry storage manifest (no {MANIFEST_FORMAT} metadata)")
        if bucket and bucket != metadata.get("source-bucket"):
            raise BadInput(f"{manifest}: is the manifest of {metadata.get('source-bucket')}, not of {bucket}")
        return ManifestSource(
            manifest_bucket=manifest_bucket,
            manifest_key=key,
            bucket=str(metadata["source-bucket"]),
            region=str(metadata.get("source-region") or runtime.config.storage.region),
            prefix=str(metadata.get("source-prefix") or ""),
            versioned=metadata.get("versioned") == "true",
            backup_id=metadata.get("backup-id"),
            sha256=_recorded_sha256(runtime, metadata.get("backup-id"), str(metadata["source-bucket"])),
        )
    record = runtime.catalog.get_backup(manifest)  # a malformed or unknown id: BackupNotFound (exit 2)
    entries = record.storage or []
    if not entries:
        raise BadInput(f"backup {record.backup_id} has no storage manifests")
    if bucket is None:
        if len(entries) > 1:
            names = ", ".join(str(entry.get("bucket")) for entry in entries)
            raise BadInput(f"backup {record.backup_id} has manifests of {names}: pass --bucket")
        entry = entries[0]
    else:
        found = _entry(record, bucket)
        if found is None:
            names = ", ".join(str(entry.get("bucket")) for entry in entries)
            raise BadInput(f"backup {record.backup_id} has no manifest of {bucket} (it has: {names})")
        entry = found
    if entry.get("error") or entry.get("objects") is None:
        raise BadInput(
            f"the manifest of {entry.get('bucket')} with backup {record.backup_id} failed: "
            f"{entry.get('error')}"
        )
    return ManifestSource(
        manifest_bucket=record.bucket,
        manifest_key=str(entry["key"]),
        bucket=str(entry["bucket"]),
        region=str(entry["region"]),
        prefix=str(entry.get("prefix") or ""),
        versioned=bool(entry.get("versioned")),
        backup_id=record.backup_id,
        sha256=entry.get("sha256"),
    )


def _recorded_sha256(runtime: Runtime, backup_id: str | None, bucket: str) -> str | None:
    """The SHA-256 the catalog recorded for this manifest, when the catalog still has its backup."""
    if not backup_id:
        return None
    try:
        record = runtime.catalog.get_backup(backup_id)
    except BadInput:
        return None  # expired from the catalog or another installation's: the manifest still lists keys
    entry = _entry(record, bucket)
    return str(entry["sha256"]) if entry and entry.get("sha256") else None
