"""The object storage port: streaming multipart uploads, checksummed downloads, manifests.

Part sizes grow with the upload: 6 MiB for the first 1,000 parts, then doubling every
1,000 parts (capped at S3's 5 GiB). Small and medium dumps keep memory at a few parts of
6 MiB; a 1 TiB dump fits in 7,400 parts and S3's largest object (5 TiB) in its
10,000-part limit.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError

from drsentry.core.errors import StorageError
from drsentry.core.observability import logger

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import TagTypeDef

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


def part_size(part_number: int) -> int:
    """Size of 1-based part `part_number`: 6 MiB, doubling every 1,000 parts."""
    if not 1 <= part_number <= MAX_PARTS:
        raise ValueError(f"part number {part_number} outside 1..{MAX_PARTS}")
    return min(BASE_PART_SIZE << ((part_number - 1) // PARTS_PER_STEP), MAX_PART_SIZE)


def capacity(parts: int) -> int:
    """Bytes that `parts` full parts hold."""
    return sum(part_size(number) for number in range(1, parts + 1))


def _describe(exc: ClientError | BotoCoreError) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return str(exc)


def encryption_args(kms_key: str | None) -> dict[str, str]:
    if kms_key:
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": kms_key}
    return {"ServerSideEncryption": "AES256"}


def checksum_tags(stored: StoredObject) -> dict[str, str]:
    """The tags that let a copy be checked without reading it: SHA-256 and size of the bytes."""
    return {SHA256_TAG: stored.sha256, SIZE_TAG: str(stored.size_bytes)}


def tag_set(tags: dict[str, str]) -> list[TagTypeDef]:
    return [{"Key": name, "Value": value} for name, value in tags.items()]


def copy_args(tags: dict[str, str]) -> dict[str, str]:
    """What a copy of a dump asks for: the source's tags, passed explicitly (a multipart
    copy gets none otherwise), and a CRC32 of its own that S3 computes as it writes (a
    dump's CRC32 is a checksum of part checksums, which a copy made of other parts lacks)."""
    tagging = {"Tagging": urlencode(tags), "TaggingDirective": "REPLACE"} if tags else {}
    return {**tagging, "ChecksumAlgorithm": PART_CHECKSUM}


def object_tags(s3: S3Client, bucket: str, key: str, version_id: str | None = None) -> dict[str, str]:
    """GetObjectTagging as a dict; StorageError naming the object when S3 would not say."""
    version: dict[str, Any] = {"VersionId": version_id} if version_id and version_id != "null" else {}
    try:
        response = s3.get_object_tagging(Bucket=bucket, Key=key, **version)
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(f"s3://{bucket}/{key}: reading its tags failed: {_describe(exc)}") from exc
    return {tag["Key"]: tag["Value"] for tag in response.get("TagSet", [])}


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size_bytes: int
    sha256: str
    version_id: str | None = None


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
            except (ClientError, BotoCoreError) as exc:
                raise StorageError(
                    f"s3://{self.bucket}/{self.key}: cannot start upload: {_describe(exc)}"
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
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"s3://{self.bucket}/{self.key}: part {part_number} failed: {_describe(exc)}"
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
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(
                f"s3://{self.bucket}/{self.key}: completing upload failed: {_describe(exc)}"
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
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "NoSuchUpload":
                self._abort_failed(exc)
                return
        except BotoCoreError as exc:
            self._abort_failed(exc)
            return
        self.upload_id = None

    def _abort_failed(self, exc: ClientError | BotoCoreError) -> None:
        logger.error(
            "aborting a multipart upload failed; the lifecycle rule will remove it",
            extra={
                "bucket": self.bucket,
                "key": self.key,
                "upload_id": self.upload_id,
                "error": _describe(exc),
            },
        )


class ObjectStore:
    """Buckets of one region."""

    def __init__(self, s3: S3Client, kms_key: str | None = None) -> None:
        self.s3 = s3
        self.kms_key = kms_key

    def writer(self, bucket: str, key: str, metadata: dict[str, str] | None = None) -> MultipartWriter:
        return MultipartWriter(self.s3, bucket, key, kms_key=self.kms_key, metadata=metadata)

    def tag(self, stored: StoredObject, tags: dict[str, str]) -> None:
        """Tag the version just written with what is known only after its last byte
        (the SHA-256, the size): one request, where metadata would need the object copied
        onto itself."""
        version: dict[str, Any] = {}
        if stored.version_id and stored.version_id != "null":
            version["VersionId"] = stored.version_id
        try:
            self.s3.put_object_tagging(
                Bucket=stored.bucket, Key=stored.key, Tagging={"TagSet": tag_set(tags)}, **version
            )
        except (ClientError, BotoCoreError) as exc:
            where = f"s3://{stored.bucket}/{stored.key}"
            raise StorageError(f"{where}: tagging failed: {_describe(exc)}") from exc

    def delete_all_versions(self, bucket: str, key: str) -> None:
        """Remove an object and every version of it (cleanup of a failed backup)."""
        try:
            paginator = self.s3.get_paginator("list_object_versions")
            for page in paginator.paginate(Bucket=bucket, Prefix=key):
                for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                    if entry["Key"] == key:
                        self.s3.delete_object(Bucket=bucket, Key=key, VersionId=entry["VersionId"])
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3://{bucket}/{key}: cleanup failed: {_describe(exc)}") from exc

    def put_json(self, bucket: str, key: str, document: dict[str, Any]) -> None:
        body = json.dumps(document, indent=2, sort_keys=True).encode("utf-8")
        try:
            self.s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                **encryption_args(self.kms_key),  # type: ignore[arg-type]
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3://{bucket}/{key}: writing failed: {_describe(exc)}") from exc

    def get_json(self, bucket: str, key: str) -> dict[str, Any]:
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3://{bucket}/{key}: reading failed: {_describe(exc)}") from exc
        try:
            document: dict[str, Any] = json.loads(body)
        except json.JSONDecodeError as exc:
            raise StorageError(
                f"s3://{bucket}/{key}: not valid JSON: {exc.msg} at line {exc.lineno}"
            ) from exc
        return document

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The object's headers, or None when it does not exist."""
        try:
            return dict(self.s3.head_object(Bucket=bucket, Key=key))
        except ClientError as exc:
            if exc.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise StorageError(f"s3://{bucket}/{key}: HEAD failed: {_describe(exc)}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"s3://{bucket}/{key}: HEAD failed: {_describe(exc)}") from exc

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = DOWNLOAD_CHUNK) -> Iterator[bytes]:
        """Stream an object's bytes; a missing object raises StorageError naming it."""
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"s3://{bucket}/{key}: reading failed: {_describe(exc)}") from exc
        try:
            yield from body.iter_chunks(chunk_size)
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"s3://{bucket}/{key}: download interrupted: {exc}") from exc
        finally:
            body.close()
