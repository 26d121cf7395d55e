"""The S3 port: every bucket drsentry touches, in any region, and nothing else talks to S3.

`Buckets` (the account's S3 clients and the KMS key) hands out a `Bucket` per name and
region. A `Bucket` knows versions, tags, managed server-side copies, Object Lock retention,
deletes, listings, Glacier restores, streaming reads, JSON documents and the multipart
writer, and answers in typed results (`ObjectHead`, `ObjectEntry`, `VersionEntry`,
`ReplicationRule`) instead of boto3's dicts. What an AWS error means is decided once, by
`aws_errors`: "not found" is `None` (an object) or `BucketNotFound` (a bucket); every other
botocore error is a `StorageError`, or the subclass a caller needs to tell apart
(`ObjectArchived`, `RestoreInProgress`, `DeleteRefused`), with one line naming the object.

KMS keys are regional: a bucket writes with the configured key as it exists in its own
region (`regional_kms_key`), so the replica in another region needs no key of its own.

Part sizes grow with the upload: 6 MiB for the first 1,000 parts, then doubling every
1,000 parts (capped at S3's 5 GiB). Small and medium dumps keep memory at a few parts of
6 MiB; a 1 TiB dump fits in 7,400 parts and S3's largest object (5 TiB) in its
10,000-part limit.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from boto3.s3.transfer import TransferConfig

from drsentry.adapters.aws_errors import (
    AWS_ERRORS,
    DELETE_REFUSED_CODES,
    describe,
    is_archived,
    is_delete_marker,
    is_delete_refused,
    is_no_such_bucket,
    is_not_found,
    is_restore_in_progress,
)
from drsentry.core.errors import (
    BucketNotFound,
    DeleteRefused,
    ObjectArchived,
    RestoreInProgress,
    StorageError,
)
from drsentry.core.observability import logger
from drsentry.core.records import iso

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import ObjectLockRetentionModeType, TierType
    from mypy_boto3_s3.type_defs import TagTypeDef

    from drsentry.adapters.aws import AwsClients
    from drsentry.adapters.aws_errors import AwsError

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
BASE_PART_SIZE = 6 * MiB
PARTS_PER_STEP = 1000
MAX_PART_SIZE = 5 * GiB
MIN_PART_SIZE = 5 * MiB
MAX_PARTS = 10_000
UPLOADS_IN_FLIGHT = 2
# S3 checks every part against its CRC32 on arrival and keeps a checksum of the whole
# object; the SHA-256 of the whole dump is drsentry's own, stored as a tag and in the catalog.
PART_CHECKSUM: Final = "CRC32"
SHA256_TAG = "sha256"
SIZE_TAG = "size-bytes"
DOWNLOAD_CHUNK = 1 * MiB
# DeleteObjects takes at most this many versions per request.
DELETE_BATCH = 1000
_RESTORE_EXPIRY_RE = re.compile(r'expiry-date="([^"]+)"')


def part_size(part_number: int) -> int:
    """Size of 1-based part `part_number`: 6 MiB, doubling every 1,000 parts."""
    if not 1 <= part_number <= MAX_PARTS:
        raise ValueError(f"part number {part_number} outside 1..{MAX_PARTS}")
    return min(BASE_PART_SIZE << ((part_number - 1) // PARTS_PER_STEP), MAX_PART_SIZE)


def capacity(parts: int) -> int:
    """Bytes that `parts` full parts hold."""
    return sum(part_size(number) for number in range(1, parts + 1))


def encryption_args(kms_key: str | None) -> dict[str, str]:
    if kms_key:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
    return {"ServerSideEncryption": "AES256"}


def regional_kms_key(kms_key: str | None, region: str) -> str | None:
    """The KMS key to write with in `region`: KMS keys are regional.

    An alias or a key id is looked up in that region (create the alias there too); a
    multi-Region key's ARN is rewritten to its replica in `region`; a single-region key
    ARN of another region cannot encrypt there.
    """
    if not kms_key or not kms_key.startswith("arn:"):
        return kms_key
    parts = kms_key.split(":", 5)
    if len(parts) != 6 or parts[3] == region:
        return kms_key
    if parts[5].startswith("key/mrk-"):
        parts[3] = region
        return ":".join(parts)
    raise StorageError(
        f"storage.kms_key {kms_key} is a key of region {parts[3]} and cannot encrypt in {region}: "
        "use an alias that exists in both regions or a multi-Region key"
    )


def bucket_region(location_constraint: str | None) -> str:
    """GetBucketLocation's answer as a region: us-east-1 answers nothing, old eu-west-1 'EU'."""
    if not location_constraint:
        return "us-east-1"
    return "eu-west-1" if location_constraint == "EU" else location_constraint


def checksum_tags(stored: StoredObject) -> dict[str, str]:
    """The tags that let a copy be checked without reading it: SHA-256 and size of the bytes."""
    return {SHA256_TAG: stored.sha256, SIZE_TAG: str(stored.size_bytes)}


def tag_set(tags: Mapping[str, str]) -> list[TagTypeDef]:
    return [{"Key": name, "Value": value} for name, value in tags.items()]


def copy_args(tags: Mapping[str, str]) -> dict[str, str]:
    """What a copy of a dump asks for: the source's tags, passed explicitly (a multipart
    copy gets none otherwise), and a CRC32 of its own that S3 computes as it writes (a
    dump's CRC32 is a checksum of part checksums, which a copy made of other parts lacks)."""
    tagging = {"Tagging": urlencode(dict(tags)), "TaggingDirective": "REPLACE"} if tags else {}
    return {**tagging, "ChecksumAlgorithm": PART_CHECKSUM}


def _version(version_id: str | None) -> dict[str, Any]:
    """The VersionId argument for a version S3 named; "null" (an unversioned write) is the current one."""
    return {"VersionId": version_id} if version_id and version_id != "null" else {}


def _where(bucket: str, key: str, version_id: str | None = None) -> str:
    return f"s3://{bucket}/{key}" + (f" version {version_id}" if version_id else "")


# what S3 says about objects ---------------------------------------------------------------


@dataclass(frozen=True)
class RestoreStatus:
    """S3's `x-amz-restore` header: a restore was requested; done once `ongoing` is False."""

    ongoing: bool
    # When S3 removes the temporary restored copy again (ISO 8601), once it is done.
    expiry: str | None = None

    @classmethod
    def from_header(cls, header: str | None) -> RestoreStatus | None:
        if not header:
            return None
        match = _RESTORE_EXPIRY_RE.search(header)
        expiry = None
        if match:
            try:
                expiry = iso(
                    datetime.strptime(match.group(1), "%a, %d %b %Y %H:%M:%S %Z").replace(tzinfo=UTC)
                )
            except ValueError:
                expiry = match.group(1)
        return cls(ongoing='ongoing-request="true"' in header, expiry=expiry)


@dataclass(frozen=True)
class ObjectHead:
    """What a HEAD says about one object (one version of it)."""

    key: str
    size_bytes: int
    etag: str = ""  # without S3's quotes
    last_modified: datetime | None = None
    version_id: str | None = None
    storage_class: str = "STANDARD"  # S3 leaves it out for STANDARD
    content_type: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    restore: RestoreStatus | None = None
    retention_mode: str | None = None
    retain_until: datetime | None = None
    # COMPLETED | PENDING | FAILED (a source under a replication rule) | REPLICA | None
    replication_status: str | None = None

    @classmethod
    def from_s3(cls, key: str, response: Mapping[str, Any]) -> ObjectHead:
        until = response.get("ObjectLockRetainUntilDate")
        return cls(
            key=key,
            size_bytes=int(response.get("ContentLength") or 0),
            etag=str(response.get("ETag") or "").strip('"'),
            last_modified=response.get("LastModified"),
            version_id=response.get("VersionId"),
            storage_class=str(response.get("StorageClass") or "STANDARD"),
            content_type=response.get("ContentType"),
            metadata=dict(response.get("Metadata") or {}),
            restore=RestoreStatus.from_header(response.get("Restore")),
            retention_mode=response.get("ObjectLockMode"),
            retain_until=until if isinstance(until, datetime) else None,
            replication_status=response.get("ReplicationStatus"),
        )


@dataclass(frozen=True, slots=True)
class ObjectEntry:
    """One object of a listing (ListObjectsV2)."""

    key: str
    size_bytes: int
    etag: str  # without S3's quotes
    last_modified: datetime | None
    storage_class: str

    @classmethod
    def from_s3(cls, entry: Mapping[str, Any]) -> ObjectEntry:
        return cls(
            key=str(entry["Key"]),
            size_bytes=int(entry.get("Size", 0)),
            etag=str(entry.get("ETag", "")).strip('"'),
            last_modified=entry.get("LastModified"),
            storage_class=str(entry.get("StorageClass") or "STANDARD"),
        )


@dataclass(frozen=True, slots=True)
class VersionEntry:
    """One version or delete marker of a listing (ListObjectVersions)."""

    key: str
    version_id: str  # "null" for what was written while versioning was off
    is_latest: bool
    delete_marker: bool
    size_bytes: int = 0
    etag: str = ""
    last_modified: datetime | None = None
    storage_class: str = "STANDARD"

    @classmethod
    def from_s3(cls, entry: Mapping[str, Any], *, delete_marker: bool) -> VersionEntry:
        return cls(
            key=str(entry["Key"]),
            version_id=str(entry.get("VersionId") or "null"),
            is_latest=bool(entry.get("IsLatest")),
            delete_marker=delete_marker,
            size_bytes=int(entry.get("Size", 0)),
            etag=str(entry.get("ETag", "")).strip('"'),
            last_modified=entry.get("LastModified"),
            storage_class=str(entry.get("StorageClass") or "STANDARD"),
        )


@dataclass(frozen=True)
class ReplicationRule:
    """One rule of a bucket's replication configuration."""

    status: str
    destination: str | None  # the destination bucket's ARN (or name) as the rule says it
    # The key prefix the rule covers; None when tags narrow it (backups carry none).
    prefix: str | None

    @classmethod
    def from_s3(cls, rule: Mapping[str, Any]) -> ReplicationRule:
        return cls(
            status=str(rule.get("Status") or ""),
            destination=(rule.get("Destination") or {}).get("Bucket"),
            prefix=_rule_prefix(rule),
        )


def _rule_prefix(rule: Mapping[str, Any]) -> str | None:
    if "Prefix" in rule:  # the older schema: the prefix on the rule itself
        return str(rule["Prefix"] or "")
    rule_filter = rule.get("Filter") or {}
    if "Tag" in rule_filter:
        return None
    if "And" in rule_filter:
        if rule_filter["And"].get("Tags"):
            return None
        return str(rule_filter["And"].get("Prefix") or "")
    return str(rule_filter.get("Prefix") or "")


@dataclass(frozen=True)
class CopyParts:
    """How a managed copy splits: one CopyObject up to `threshold`, parallel UploadPartCopy
    parts above it (s3transfer grows the part size so even a 5 TB object stays under 10,000 parts)."""

    threshold: int = 256 * MiB
    part_size: int = 256 * MiB
    concurrency: int = 10

    def transfer(self) -> TransferConfig:
        return TransferConfig(
            multipart_threshold=self.threshold,
            multipart_chunksize=self.part_size,
            max_concurrency=self.concurrency,
            use_threads=True,
        )


DEFAULT_COPY_PARTS: Final = CopyParts()


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size_bytes: int
    sha256: str
    version_id: str | None = None


# one bucket ---------------------------------------------------------------------------------


# About 300 lines on purpose: this is the one owner of every S3 call on a bucket (the
# architecture's rule), a flat list of small methods, each one request and its error wording.
class Bucket:
    """One S3 bucket, through a client of its region."""

    def __init__(
        self, s3: S3Client, name: str, *, region: str | None = None, kms_key: str | None = None
    ) -> None:
        self.s3 = s3
        self.name = name
        self.region = region or s3.meta.region_name
        self.kms_key = kms_key

    def _failed(self, what: str, exc: AwsError, key: str = "", version_id: str | None = None) -> StorageError:
        return StorageError(f"{_where(self.name, key, version_id)}: {what} failed: {describe(exc)}")

    def _encryption(self) -> dict[str, str]:
        return encryption_args(regional_kms_key(self.kms_key, self.region))

    # the bucket's own facts ------------------------------------------------------------

    def _bucket_fact(self, what: str, request: Any) -> Mapping[str, Any] | None:
        """One GetBucket* answer; None when the bucket has no such configuration at all."""
        try:
            response: Mapping[str, Any] = request(Bucket=self.name)
        except AWS_ERRORS as exc:
            message = f"s3://{self.name}: reading its {what} failed: {describe(exc)}"
            if is_no_such_bucket(exc):
                raise BucketNotFound(message) from exc
            if is_not_found(exc):  # ObjectLockConfigurationNotFoundError, ReplicationConfigurationNotFound...
                return None
            raise StorageError(message) from exc
        return response

    def location(self) -> str:
        """The region the bucket really lives in. BucketNotFound when there is no such bucket."""
        response = self._bucket_fact("location", self.s3.get_bucket_location) or {}
        return bucket_region(response.get("LocationConstraint"))

    def versioning(self) -> str | None:
        """Enabled, Suspended, or None (never enabled)."""
        response = self._bucket_fact("versioning", self.s3.get_bucket_versioning) or {}
        return response.get("Status")

    def object_lock_enabled(self) -> bool:
        response = self._bucket_fact("Object Lock configuration", self.s3.get_object_lock_configuration) or {}
        return bool(response.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled")

    def replication_rules(self) -> list[ReplicationRule] | None:
        """The bucket's replication rules; None when it has no replication configuration."""
        response = self._bucket_fact("replication configuration", self.s3.get_bucket_replication)
        if response is None:
            return None
        rules = response.get("ReplicationConfiguration", {}).get("Rules", [])
        return [ReplicationRule.from_s3(rule) for rule in rules]

    # objects -------------------------------------------------------------------------

    def head(self, key: str, version_id: str | None = None) -> ObjectHead | None:
        """The object's (or that version's) facts; None when it does not exist or is a delete marker."""
        try:
            response = self.s3.head_object(Bucket=self.name, Key=key, **_version(version_id))
        except AWS_ERRORS as exc:
            if is_not_found(exc) or is_delete_marker(exc):
                return None
            raise self._failed("HEAD", exc, key, version_id) from exc
        return ObjectHead.from_s3(key, response)

    def tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        try:
            response = self.s3.get_object_tagging(Bucket=self.name, Key=key, **_version(version_id))
        except AWS_ERRORS as exc:
            raise StorageError(f"{_where(self.name, key)}: reading its tags failed: {describe(exc)}") from exc
        return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}

    def put_tags(self, key: str, tags: Mapping[str, str], version_id: str | None = None) -> None:
        try:
            self.s3.put_object_tagging(
                Bucket=self.name, Key=key, Tagging={"TagSet": tag_set(tags)}, **_version(version_id)
            )
        except AWS_ERRORS as exc:
            raise self._failed("tagging", exc, key) from exc

    def iter_chunks(self, key: str, chunk_size: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
        """Stream an object's bytes. StorageError naming it when it cannot be read; ObjectArchived
        when it waits in GLACIER or DEEP_ARCHIVE for a restore."""
        try:
            body = self.s3.get_object(Bucket=self.name, Key=key)["Body"]
        except AWS_ERRORS as exc:
            if is_archived(exc):
                raise ObjectArchived(f"{_where(self.name, key)}: reading failed: {describe(exc)}") from exc
            raise self._failed("reading", exc, key) from exc
        try:
            yield from body.iter_chunks(chunk_size)
        except (*AWS_ERRORS, OSError) as exc:
            raise StorageError(f"{_where(self.name, key)}: download interrupted: {describe(exc)}") from exc
        finally:
            body.close()

    def get_json(self, key: str) -> dict[str, Any]:
        body = b"".join(self.iter_chunks(key))
        try:
            document: dict[str, Any] = json.loads(body)
        except json.JSONDecodeError as exc:
            raise StorageError(
                f"{_where(self.name, key)}: not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from exc
        return document

    def put_json(self, key: str, document: Mapping[str, Any]) -> None:
        body = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
        try:
            self.s3.put_object(
                Bucket=self.name,
                Key=key,
                Body=body,
                ContentType="application/json",
                **self._encryption(),  # type: ignore[arg-type]
            )
        except AWS_ERRORS as exc:
            raise self._failed("writing", exc, key) from exc

    def put_bytes(
        self,
        key: str,
        body: bytes,
        *,
        content_type: str,
        metadata: Mapping[str, str] | None = None,
    ) -> StoredObject:
        """Store a small object in one request, encrypted like a dump, with its SHA-256 and size
        as tags (`checksum_tags`) written with it: there is no moment without them."""
        stored = StoredObject(
            bucket=self.name, key=key, size_bytes=len(body), sha256=hashlib.sha256(body).hexdigest()
        )
        try:
            response = self.s3.put_object(
                Bucket=self.name,
                Key=key,
                Body=body,
                ContentType=content_type,
                Metadata=dict(metadata or {}),
                Tagging=urlencode(checksum_tags(stored)),
                ChecksumAlgorithm=PART_CHECKSUM,
                **self._encryption(),  # type: ignore[arg-type]
            )
        except AWS_ERRORS as exc:
            raise self._failed("writing", exc, key) from exc
        return StoredObject(
            bucket=stored.bucket,
            key=key,
            size_bytes=stored.size_bytes,
            sha256=stored.sha256,
            version_id=response.get("VersionId"),
        )

    def writer(self, key: str, metadata: Mapping[str, str] | None = None) -> MultipartWriter:
        return MultipartWriter(
            self.s3,
            self.name,
            key,
            kms_key=regional_kms_key(self.kms_key, self.region),
            metadata=dict(metadata or {}),
        )

    def copy_in(
        self,
        source: Bucket,
        head: ObjectHead,
        *,
        storage_class: str | None = None,
        metadata: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        parts: CopyParts = DEFAULT_COPY_PARTS,
    ) -> None:
        """Server-side managed copy of exactly the version `head` describes to the same key here.

        Requested from this bucket's region (a cross-region copy goes through the destination's
        endpoint). `metadata` and `tags`, when given, are written explicitly (with the source's
        content type, and a CRC32 S3 computes as it writes): a multipart copy gets neither from
        its source. Left out, S3 copies the source's own, which a one-part copy (a manifest) keeps.
        """
        copy_source = {"Bucket": source.name, "Key": head.key, **_version(head.version_id)}
        extra: dict[str, Any] = {**self._encryption()}
        if storage_class:
            extra["StorageClass"] = storage_class
        if metadata is None:
            extra["MetadataDirective"] = "COPY"
        else:
            extra.update(
                Metadata=dict(metadata),
                MetadataDirective="REPLACE",
                ContentType=head.content_type or "application/octet-stream",
            )
        if tags is not None:
            extra.update(copy_args(tags))
        try:
            self.s3.copy(
                copy_source,  # type: ignore[arg-type]
                self.name,
                head.key,
                ExtraArgs=extra,
                SourceClient=source.s3,
                Config=parts.transfer(),
            )
        except AWS_ERRORS as exc:
            where = f"s3://{source.name}/{head.key} to s3://{self.name}/{head.key}"
            raise StorageError(f"copying {where} failed: {describe(exc)}") from exc

    # Object Lock and Glacier ------------------------------------------------------------

    def put_retention(
        self, key: str, version_id: str | None, *, mode: ObjectLockRetentionModeType, until: datetime
    ) -> None:
        """Object Lock retention on one version; read it back with `head`."""
        try:
            self.s3.put_object_retention(
                Bucket=self.name,
                Key=key,
                Retention={"Mode": mode, "RetainUntilDate": until},
                **_version(version_id),
            )
        except AWS_ERRORS as exc:
            raise self._failed("setting Object Lock retention", exc, key) from exc

    def request_restore(self, key: str, version_id: str | None, *, days: int, tier: TierType) -> None:
        """Ask S3 to restore an archived version for `days`; RestoreInProgress when it already is."""
        try:
            self.s3.restore_object(
                Bucket=self.name,
                Key=key,
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": tier}},
                **_version(version_id),
            )
        except AWS_ERRORS as exc:
            if is_restore_in_progress(exc):
                raise RestoreInProgress(f"{_where(self.name, key)}: {describe(exc)}") from exc
            raise self._failed("restore request", exc, key) from exc

    # listings ---------------------------------------------------------------------------

    def iter_objects(self, prefix: str) -> Iterator[ObjectEntry]:
        """Every current object under `prefix`, in S3's key order, one listing page at a time."""
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
                for entry in page.get("Contents", []):
                    yield ObjectEntry.from_s3(entry)
        except AWS_ERRORS as exc:
            raise self._failed("listing", exc, prefix) from exc

    def iter_versions(self, prefix: str) -> Iterator[VersionEntry]:
        """Every version and delete marker under `prefix`, in S3's key order (a key's newest first)."""
        try:
            for page in self.s3.get_paginator("list_object_versions").paginate(
                Bucket=self.name, Prefix=prefix
            ):
                # Versions and delete markers come as two key-ordered lists per page: merge them.
                yield from heapq.merge(
                    (VersionEntry.from_s3(v, delete_marker=False) for v in page.get("Versions", [])),
                    (VersionEntry.from_s3(m, delete_marker=True) for m in page.get("DeleteMarkers", [])),
                    key=lambda entry: entry.key,
                )
        except AWS_ERRORS as exc:
            raise self._failed("listing versions", exc, prefix) from exc

    # deletes ----------------------------------------------------------------------------
    # Versions are deleted by id: a plain DELETE on a versioned bucket only adds a delete marker
    # and keeps the bytes. BypassGovernanceRetention is never sent: a lock is never forced.

    def delete_version(self, key: str, version_id: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.name, Key=key, VersionId=version_id)
        except AWS_ERRORS as exc:
            if is_delete_refused(exc):
                raise DeleteRefused(
                    f"{_where(self.name, key, version_id)}: delete refused: {describe(exc)}"
                ) from exc
            raise self._failed("delete", exc, key, version_id) from exc

    def delete_versions(self, versions: Sequence[tuple[str, str]]) -> None:
        """Delete (key, version id) pairs, a thousand a request; the first key S3 refused is raised,
        with how many more there were."""
        for start in range(0, len(versions), DELETE_BATCH):
            batch = versions[start : start + DELETE_BATCH]
            try:
                response = self.s3.delete_objects(
                    Bucket=self.name,
                    Delete={
                        "Objects": [{"Key": key, "VersionId": version} for key, version in batch],
                        "Quiet": True,
                    },
                )
            except AWS_ERRORS as exc:
                if is_delete_refused(exc):
                    raise DeleteRefused(
                        f"{_where(self.name, batch[0][0])}: delete refused: {describe(exc)}"
                    ) from exc
                raise self._failed("delete", exc, batch[0][0]) from exc
            _raise_delete_errors(self.name, list(response.get("Errors", [])))

    def delete_all_versions(self, key: str) -> None:
        """Remove an object and every version and delete marker of it."""
        self.delete_versions(
            [(entry.key, entry.version_id) for entry in self.iter_versions(key) if entry.key == key]
        )

    def hide(self, keys: Sequence[str]) -> None:
        """Withdraw objects without destroying any version: a DeleteObjects without version ids
        puts a delete marker on each key of a versioned bucket, so the object leaves listings and
        GETs while every version stays (what a role without s3:DeleteObjectVersion can do; the
        archive run purges the versions of a failed run). A thousand keys a request."""
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            try:
                response = self.s3.delete_objects(
                    Bucket=self.name, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
                )
            except AWS_ERRORS as exc:
                raise self._failed("withdrawal", exc, batch[0]) from exc
            errors = list(response.get("Errors", []))
            if errors:
                first = errors[0]
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                reason = f"{first.get('Code')}: {first.get('Message', '')}".rstrip(": ")
                raise StorageError(f"s3://{self.name}/{first.get('Key')}: withdrawal failed{more}: {reason}")


def _raise_delete_errors(bucket: str, errors: Sequence[Mapping[str, Any]]) -> None:
    if not errors:
        return
    first = errors[0]
    where = f"s3://{bucket}/{first.get('Key')} version {first.get('VersionId', '?')}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    reason = f"{first.get('Code')}: {first.get('Message', '')}".rstrip(": ")
    if first.get("Code") in DELETE_REFUSED_CODES:
        raise DeleteRefused(
            f"{where}: delete refused{more}: {reason}; Object Lock retention or a legal hold protects it "
            "(or the role lacks s3:DeleteObjectVersion); drsentry never bypasses a lock"
        )
    raise StorageError(f"{where}: delete failed{more}: {reason}")


class Buckets:
    """Every bucket of the account, in any region: one client per region (AwsClients caches
    them), and the configured KMS key for what is written."""

    def __init__(self, clients: AwsClients, kms_key: str | None = None) -> None:
        self.clients = clients
        self.kms_key = kms_key

    def bucket(self, name: str, region: str | None = None) -> Bucket:
        """The bucket `name` in `region` (the primary region when not given)."""
        region = region or self.clients.region
        return Bucket(self.clients.s3(region), name, region=region, kms_key=self.kms_key)


class ObjectStore:
    """The primary region's buckets by name, for the readers that take (bucket, key) pairs
    (verify, the restore stream and its checksumming subclass); each call is a `Bucket`'s."""

    def __init__(self, s3: S3Client, kms_key: str | None = None) -> None:
        self.s3 = s3
        self.kms_key = kms_key

    def bucket(self, name: str) -> Bucket:
        return Bucket(self.s3, name, kms_key=self.kms_key)

    def writer(self, bucket: str, key: str, metadata: dict[str, str] | None = None) -> MultipartWriter:
        return self.bucket(bucket).writer(key, metadata)

    def tag(self, stored: StoredObject, tags: dict[str, str]) -> None:
        """Tag the version just written with what is known only after its last byte
        (the SHA-256, the size): one request, where metadata would need the object copied
        onto itself."""
        self.bucket(stored.bucket).put_tags(stored.key, tags, stored.version_id)

    def delete_all_versions(self, bucket: str, key: str) -> None:
        self.bucket(bucket).delete_all_versions(key)

    def put_json(self, bucket: str, key: str, document: dict[str, Any]) -> None:
        self.bucket(bucket).put_json(key, document)

    def get_json(self, bucket: str, key: str) -> dict[str, Any]:
        return self.bucket(bucket).get_json(key)

    def head(self, bucket: str, key: str) -> ObjectHead | None:
        return self.bucket(bucket).head(key)

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
        return self.bucket(bucket).iter_chunks(key, chunk_size)


# the multipart writer -------------------------------------------------------------------------


class MultipartWriter:
    """A write-only stream into one S3 object, uploaded part by part as it is written.

    ``complete()`` finishes it; ``abort()`` removes every uploaded part, so a
    failed backup leaves no object behind. Memory holds at most the part being filled
    plus ``UPLOADS_IN_FLIGHT`` parts on their way.
    """

    def __init__(
        self,
        s3: S3Client,
        bucket: str,
        key: str,
        *,
        kms_key: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.key = key
        self._kms_key = kms_key
        self._metadata = metadata or {}
        # The part being filled; once full it is handed to the upload as it is (no copy)
        # and the next part starts empty, so a small object never holds a whole part size.
        self._part = bytearray()
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._next_part = 1
        self._parts: list[dict[str, Any]] = []
        self._pending: list[Future[dict[str, Any]]] = []
        self._slots = threading.BoundedSemaphore(UPLOADS_IN_FLIGHT)
        self._pool = ThreadPoolExecutor(max_workers=UPLOADS_IN_FLIGHT, thread_name_prefix="s3-part")
        self.upload_id: str | None = None
        self._closed = False

    @property
    def size_bytes(self) -> int:
        return self._size

    def _start(self) -> str:
        if self.upload_id is None:
            try:
                response = self.s3.create_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    Metadata=self._metadata,
                    ContentType="application/octet-stream",
                    ChecksumAlgorithm=PART_CHECKSUM,
                    **encryption_args(self._kms_key),  # type: ignore[arg-type]
                )
            except AWS_ERRORS as exc:
                raise StorageError(
                    f"s3://{self.bucket}/{self.key}: cannot start upload: {describe(exc)}"
                ) from exc
            self.upload_id = response["UploadId"]
        return self.upload_id

    def write(self, chunk: bytes) -> None:
        if self._closed:
            raise StorageError(f"s3://{self.bucket}/{self.key}: write after close")
        self._sha256.update(chunk)
        self._size += len(chunk)
        view = memoryview(chunk)
        while view:
            taken = view[: part_size(self._next_part) - len(self._part)]
            self._part += taken
            view = view[len(taken) :]
            if len(self._part) == part_size(self._next_part):
                body, self._part = self._part, bytearray()
                self._submit(body)

    def _submit(self, body: bytes | bytearray) -> None:
        upload_id = self._start()
        self._raise_failed_part()
        part_number = self._next_part
        if part_number > MAX_PARTS:
            raise StorageError(f"s3://{self.bucket}/{self.key}: more than {MAX_PARTS} parts")
        self._next_part += 1
        self._slots.acquire()
        future = self._pool.submit(self._upload_part, upload_id, part_number, body)
        future.add_done_callback(lambda _done: self._slots.release())
        self._pending.append(future)

    def _upload_part(self, upload_id: str, part_number: int, body: bytes | bytearray) -> dict[str, Any]:
        try:
            response = self.s3.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=body,  # type: ignore[arg-type]  # botocore takes a bytearray; the stubs say bytes
                ChecksumAlgorithm=PART_CHECKSUM,
            )
        except AWS_ERRORS as exc:
            raise StorageError(
                f"s3://{self.bucket}/{self.key}: part {part_number} failed: {describe(exc)}"
            ) from exc
        part = {"PartNumber": part_number, "ETag": response["ETag"]}
        if response.get("ChecksumCRC32"):
            part["ChecksumCRC32"] = response["ChecksumCRC32"]
        return part

    def _raise_failed_part(self) -> None:
        for future in [f for f in self._pending if f.done()]:
            self._pending.remove(future)
            self._parts.append(future.result())  # re-raises a failed part's StorageError

    def complete(self) -> StoredObject:
        """Upload what is buffered and finish the object. The caller aborts on error."""
        if self._part or self.upload_id is None:
            # The last part may be smaller than 5 MiB; an empty dump still makes one part.
            body, self._part = self._part, bytearray()
            self._submit(body)
        for future in self._pending:
            self._parts.append(future.result())
        self._pending.clear()
        self._closed = True
        self._pool.shutdown(wait=True)
        parts = sorted(self._parts, key=lambda part: part["PartNumber"])
        try:
            response = self.s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self._start(),
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
            )
        except AWS_ERRORS as exc:
            raise StorageError(
                f"s3://{self.bucket}/{self.key}: completing upload failed: {describe(exc)}"
            ) from exc
        self.upload_id = None
        return StoredObject(
            self.bucket, self.key, self._size, self._sha256.hexdigest(), response.get("VersionId")
        )

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    def abort(self) -> None:
        """Drop every part; safe to call more than once and after a failure.

        Never raises: it runs while another error is being handled, and that error is the
        one the operator needs. An abort that fails is logged with the upload id; the
        bucket's lifecycle rule removes incomplete uploads after a day.
        """
        self._closed = True
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
        self._part = bytearray()
        if self.upload_id is None:
            return
        try:
            self.s3.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
        except AWS_ERRORS as exc:
            if not is_not_found(exc):  # NoSuchUpload: already gone
                self._abort_failed(exc)
                return
        self.upload_id = None

    def _abort_failed(self, exc: AwsError) -> None:
        logger.error(
            "aborting a multipart upload failed; the lifecycle rule will remove it",
            extra={
                "bucket": self.bucket,
                "key": self.key,
                "upload_id": self.upload_id,
                "error": describe(exc),
            },
        )
