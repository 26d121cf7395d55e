"""``drsentry storage restore-list``: what recreating a bucket as a manifest lists it would need.

The manifest and the bucket's versions are both read in S3's key order and joined as they
stream, so memory stays flat; the keys needing action go to the caller's spool file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from drsentry.core.errors import BadInput, StorageError
from drsentry.core.records import BackupRecord, StorageManifestEntry
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.listing import iter_key_states, iter_manifest
from drsentry.jobs.storage_manifest.rules import MANIFEST_FORMAT, judge_key, manifest_entry


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
        return _manifest_at(runtime, manifest, bucket)
    record = runtime.catalog.get_backup(manifest)  # a malformed or unknown id: BackupNotFound (exit 2)
    entry = _backup_entry(record, bucket)
    if not entry.complete:
        raise BadInput(f"the manifest of {entry.bucket} with backup {record.backup_id} failed: {entry.error}")
    return ManifestSource(
        manifest_bucket=record.bucket,
        manifest_key=entry.key,
        bucket=entry.bucket,
        region=entry.region,
        prefix=entry.prefix,
        versioned=bool(entry.versioned),
        backup_id=record.backup_id,
        sha256=entry.sha256,
    )


def _backup_entry(record: BackupRecord, bucket: str | None) -> StorageManifestEntry:
    """The entry of `bucket` in a backup's manifests; the only one when no bucket is named."""
    entries = record.storage or []
    if not entries:
        raise BadInput(f"backup {record.backup_id} has no storage manifests")
    names = ", ".join(entry.bucket for entry in entries)
    if bucket is None:
        if len(entries) > 1:
            raise BadInput(f"backup {record.backup_id} has manifests of {names}: pass --bucket")
        return entries[0]
    found = manifest_entry(record, bucket)
    if found is None:
        raise BadInput(f"backup {record.backup_id} has no manifest of {bucket} (it has: {names})")
    return found


def _manifest_at(runtime: Runtime, manifest: str, bucket: str | None) -> ManifestSource:
    """A manifest named by its `s3://BUCKET/KEY`: what it describes comes from its metadata."""
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


def _recorded_sha256(runtime: Runtime, backup_id: str | None, bucket: str) -> str | None:
    """The SHA-256 the catalog recorded for this manifest, when the catalog still has its backup."""
    if not backup_id:
        return None
    try:
        record = runtime.catalog.get_backup(backup_id)
    except BadInput:
        return None  # expired from the catalog or another installation's: the manifest still lists keys
    entry = manifest_entry(record, bucket)
    return entry.sha256 if entry and entry.sha256 else None
