"""The multipart writer: parts cut at exact sizes from writes of any size, no copies kept."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from drsentry.adapters.aws import AwsClients
from drsentry.adapters.buckets import MiB, MultipartWriter, part_size
from drsentry.core.errors import StorageError

BUCKET = "drsentry-multipart-test"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = AwsClients("us-east-1").s3()
        client.create_bucket(Bucket=BUCKET)
        client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield client


def test_writes_of_odd_sizes_make_exact_parts_and_the_same_bytes(s3: Any) -> None:
    # Given two full parts and a bit more, written in chunks that straddle every boundary
    data = os.urandom(2 * part_size(1) + MiB + 3)
    writer = MultipartWriter(s3, BUCKET, "dump", metadata={"backup-id": "b1"})
    for start in range(0, len(data), 1_000_003):
        writer.write(data[start : start + 1_000_003])

    # When the upload completes
    stored = writer.complete()

    # Then the object is the data, in three parts (two full ones and the rest), checksummed
    body = s3.get_object(Bucket=BUCKET, Key="dump")["Body"].read()
    assert body == data
    assert stored.size_bytes == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    head = s3.head_object(Bucket=BUCKET, Key="dump")
    assert head["ETag"].strip('"').endswith("-3")
    assert head["Metadata"] == {"backup-id": "b1"}


def test_an_empty_stream_still_makes_an_empty_object(s3: Any) -> None:
    stored = MultipartWriter(s3, BUCKET, "empty").complete()

    assert stored.size_bytes == 0
    assert s3.get_object(Bucket=BUCKET, Key="empty")["Body"].read() == b""


def test_abort_leaves_no_object_and_no_upload(s3: Any) -> None:
    writer = MultipartWriter(s3, BUCKET, "aborted")
    writer.write(os.urandom(part_size(1) + 1))  # one part uploaded, one byte buffered

    writer.abort()

    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)
    assert s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads", []) == []
    with pytest.raises(StorageError, match="write after close"):
        writer.write(b"x")


def test_large_buffers_are_kept_off_the_heap_where_the_c_library_is_glibc() -> None:
    import platform

    from drsentry.jobs.runtime import keep_large_buffers_off_the_heap

    is_glibc = platform.libc_ver()[0] == "glibc"
    assert keep_large_buffers_off_the_heap() is is_glibc
    assert keep_large_buffers_off_the_heap() is is_glibc  # setting it again is harmless
