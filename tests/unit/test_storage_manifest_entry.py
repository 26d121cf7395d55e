"""The backup record's ``storage`` entries, typed: catalogs written while they were plain dicts
still read, and the record writes them back attribute for attribute (no network)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from drsentry.adapters.table.catalog import backup_item
from drsentry.adapters.table.items import from_item, to_item
from drsentry.core.records import BackupRecord, StorageManifestEntry
from drsentry.jobs.storage_manifest.rules import manifest_entry, storage_problems

BACKUP_ID = "20261122T180000042Z-1a2b3c4d"
UPLOADS_KEY = f"backups/app/2026/11/22/{BACKUP_ID}.storage.acme-uploads.jsonl.gz"
GONE_KEY = f"backups/app/2026/11/22/{BACKUP_ID}.storage.acme-gone.jsonl.gz"
GONE_ERROR = "s3://acme-gone/: listing failed: NoSuchBucket: The specified bucket does not exist"

# The `storage` attribute exactly as catalogs hold it today (DynamoDB JSON): every field of an
# entry is present, the ones without a value as NULL.
STORED_STORAGE: dict[str, Any] = {
    "L": [
        {
            "M": {
                "bucket": {"S": "acme-uploads"},
                "region": {"S": "eu-west-1"},
                "prefix": {"S": ""},
                "key": {"S": UPLOADS_KEY},
                "versioned": {"BOOL": True},
                "objects": {"N": "10000"},
                "bytes": {"N": "52428800"},
                "sha256": {"S": "9b2c" * 16},
                "error": {"NULL": True},
            }
        },
        {
            "M": {
                "bucket": {"S": "acme-gone"},
                "region": {"S": "us-east-1"},
                "prefix": {"S": "invoices/"},
                "key": {"S": GONE_KEY},
                "versioned": {"NULL": True},
                "objects": {"NULL": True},
                "bytes": {"NULL": True},
                "sha256": {"NULL": True},
                "error": {"S": GONE_ERROR},
            }
        },
    ]
}


def stored_backup_item() -> dict[str, Any]:
    record = BackupRecord(
        target="app",
        backup_id=BACKUP_ID,
        status="completed",
        started_at="2026-11-22T18:00:00Z",
        bucket="acme-dr-backups",
        key=f"backups/app/2026/11/22/{BACKUP_ID}.dump",
        manifest_key=f"backups/app/2026/11/22/{BACKUP_ID}.manifest.json",
        size_bytes=1024,
    )
    return {**to_item(backup_item(record)), "storage": STORED_STORAGE}


def test_a_stored_record_reads_its_storage_entries_as_typed_entries() -> None:
    # Given a backup item as catalogs hold it today
    item = stored_backup_item()

    # When the catalog reads it
    record = BackupRecord.model_validate(from_item(item))

    # Then each entry is typed, its values as they were written
    uploads, gone = record.storage or []
    assert uploads == StorageManifestEntry(
        bucket="acme-uploads",
        region="eu-west-1",
        prefix="",
        key=UPLOADS_KEY,
        versioned=True,
        objects=10_000,
        bytes=52_428_800,
        sha256="9b2c" * 16,
        error=None,
    )
    assert uploads.complete and not gone.complete
    assert (gone.objects, gone.error) == (None, GONE_ERROR)
    assert manifest_entry(record, "acme-gone") == gone
    assert storage_problems(record) == [f"acme-gone: {GONE_ERROR}"]


def test_a_stored_record_is_written_back_to_the_same_item() -> None:
    # Given a backup item as catalogs hold it today, read into a record
    item = stored_backup_item()
    record = BackupRecord.model_validate(from_item(item))

    # When the record is written back, whole or as the storage update the backup job makes
    rewritten = to_item(backup_item(record))
    updated = to_item({":storage": [entry.model_dump() for entry in record.storage or []]})

    # Then the stored attributes are identical, NULLs included
    assert rewritten == item
    assert updated[":storage"] == STORED_STORAGE


def test_an_entry_without_its_manifest_key_is_refused() -> None:
    with pytest.raises(ValidationError, match="key"):
        StorageManifestEntry.model_validate({"bucket": "acme-uploads", "region": "eu-west-1"})
