"""Reading what manifests describe, one page at a time: a bucket's current objects (and, for
restore-list, every version of each key), and the rows of a stored manifest.

A versioned bucket is listed with ``ListObjectVersions`` and only current versions are
manifested (``version_id`` is what a restore brings back); an unversioned one with
``ListObjectsV2`` (``version_id`` null). Both come in S3's key order, which is what lets
restore-list join a manifest with the bucket without holding either in memory.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterator
from itertools import groupby

from drsentry.adapters.buckets import Bucket
from drsentry.core.errors import StorageError
from drsentry.jobs.storage_manifest.rules import KeyState, ManifestRow, manifest_row


def bucket_versioned(bucket: Bucket) -> bool:
    """Versioning enabled or suspended: either way earlier versions may exist to restore from."""
    return bucket.versioning() in {"Enabled", "Suspended"}


def iter_current_objects(bucket: Bucket, prefix: str, versioned: bool) -> Iterator[ManifestRow]:
    """Every current object under `prefix`, in S3's key order, one listing page at a time."""
    if not versioned:
        for entry in bucket.iter_objects(prefix):
            yield manifest_row(entry, None)
        return
    for version in bucket.iter_versions(prefix):
        # A key whose latest entry is a delete marker is deleted: not in the manifest.
        if version.is_latest and not version.delete_marker:
            yield manifest_row(version, version.version_id)


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
