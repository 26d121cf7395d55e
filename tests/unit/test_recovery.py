"""Restore rules without a database: the held-back tail, the checksum verdict, pg_restore options."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drsentry.core.errors import BadInput
from drsentry.core.records import BackupRecord
from drsentry.operator.recovery import (
    HOLD_BACK_BYTES,
    ChecksumMismatch,
    NoProgress,
    RecoveryPlan,
    VerifiedDownload,
    check_download,
    file_restore_options,
    parse_table_name,
    table_schema,
)

CHUNK = 256 * 1024


class FakeStore:
    s3: Any = None
    kms_key: str | None = None

    def __init__(self, data: bytes) -> None:
        self.data = data

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        for start in range(0, len(self.data), CHUNK):
            yield self.data[start : start + CHUNK]


def record(data: bytes, **changes: Any) -> BackupRecord:
    fields = {
        "target": "app",
        "backup_id": "20261122T180000042Z-1a2b3c4d",
        "status": "completed",
        "started_at": "2026-11-22T18:00:00Z",
        "bucket": "b",
        "key": "k",
        "manifest_key": "m",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "tables": {"organizations": 20, "audit.events": 5},
    }
    fields.update(changes)
    return BackupRecord.model_validate(fields)


def test_a_matching_object_is_handed_over_whole() -> None:
    data = bytes(range(256)) * 12_000  # about 3 MiB
    download = VerifiedDownload(FakeStore(data), record(data), NoProgress())  # type: ignore[arg-type]

    assert b"".join(download.iter_chunks("b", "k")) == data
    assert download.sha256 == hashlib.sha256(data).hexdigest()


def test_the_last_mib_is_held_back_until_the_checksum_is_judged() -> None:
    # Given an object that is not the catalogued backup
    data = b"x" * (4 * 1024 * 1024)
    download = VerifiedDownload(FakeStore(data), record(data, sha256="0" * 64), NoProgress())  # type: ignore[arg-type]

    # When it is read, everything but the held-back tail comes out, then the mismatch is raised
    handed_over = 0
    with pytest.raises(ChecksumMismatch, match="nothing was restored"):
        for chunk in download.iter_chunks("b", "k"):
            handed_over += len(chunk)

    # so pg_restore never saw the end of the archive and could not have committed
    assert handed_over <= len(data) - HOLD_BACK_BYTES


def test_a_small_object_is_held_back_entirely() -> None:
    data = b"small"
    download = VerifiedDownload(FakeStore(data), record(data, size_bytes=6), NoProgress())  # type: ignore[arg-type]
    chunks = download.iter_chunks("b", "k")
    with pytest.raises(ChecksumMismatch, match="5 bytes, the catalog says 6"):
        next(chunks)


def test_checksum_verdict_names_every_difference() -> None:
    data = b"abc"
    with pytest.raises(ChecksumMismatch) as raised:
        check_download(
            record(data), "b", "k", size_bytes=4, sha256="f" * 64, consequence="pg_restore was not started"
        )
    message = str(raised.value)
    assert "4 bytes, the catalog says 3" in message
    assert f"SHA-256 {'f' * 64} differs from the catalog's" in message
    assert message.endswith("nothing was restored (pg_restore was not started)")


def plan(**changes: Any) -> RecoveryPlan:
    fields: dict[str, Any] = {
        "backup": record(b"x"),
        "source": None,
        "target": None,
        "tables": (),
        "clean": False,
        "jobs": None,
        "mask": None,
        "pg_restore": None,
        "backup_age_seconds": 0.0,
        "verification": None,
    }
    fields.update(changes)
    return RecoveryPlan(**fields)


def test_file_restore_options() -> None:
    # A partial restore names its chosen archive entries (pg_restore's --table brings no partitions)
    assert file_restore_options(plan(tables=("audit.events",)), Path("/tmp/x/selected.list")) == [
        "--single-transaction",
        "--use-list=/tmp/x/selected.list",
    ]
    assert file_restore_options(plan(jobs=4, clean=True)) == ["--clean", "--if-exists", "--jobs=4"]
    # owners and grants are kept unless --no-owner, which drops both
    assert file_restore_options(plan(keep_owners=False)) == [
        "--single-transaction",
        "--no-owner",
        "--no-privileges",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("organizations", ("public", "organizations")),
        ("audit.events", ("audit", "events")),
        ('"Billing Data"."Invoice Lines"', ("Billing Data", "Invoice Lines")),
        ('audit."Odd.Name ""x"""', ("audit", 'Odd.Name "x"')),
        ('"My Table"', ("public", "My Table")),
    ],
)
def test_table_names_accept_quoted_parts(text: str, expected: tuple[str, str]) -> None:
    assert parse_table_name(text) == expected


@pytest.mark.parametrize("text", ['"unterminated', '"a"x', 'a."b"c'])
def test_a_malformed_table_name_is_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="is not a table name"):
        parse_table_name(text)


def test_tables_belong_to_public_unless_qualified() -> None:
    assert table_schema("organizations") == "public"
    assert table_schema("audit.events") == "audit"
