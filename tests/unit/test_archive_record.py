"""The backup record's `archive` sub-document, typed (ArchiveCopy): items that existing catalogs
hold read into it, and it writes them back attribute for attribute (in-process moto, no server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from drsentry.adapters.aws import AwsClients
from drsentry.adapters.table import Catalog, create_table
from drsentry.adapters.table.catalog import backup_item
from drsentry.adapters.table.items import to_item
from drsentry.adapters.table.keys import backup_sk, key, target_pk
from drsentry.core.records import ArchiveCopy, ArchiveRestore, BackupRecord

TABLE = "catalog-archive-unit"
BACKUP_ID = "20261001T000500000Z-0a0b0c0d"
DUMP = f"backups/app/{BACKUP_ID}.dump"
MANIFEST = f"backups/app/{BACKUP_ID}.manifest.json"

# As the archive run has written it: every field, `null` for the lock of an archive
# configured without one, and a restore S3 has finished (readable_until not known).
WRITTEN_BY_A_RUN = {
    "M": {
        "bucket": {"S": "dr-archive"},
        "key": {"S": DUMP},
        "manifest_key": {"S": MANIFEST},
        "storage_class": {"S": "DEEP_ARCHIVE"},
        "lock_mode": {"NULL": True},
        "retain_until": {"NULL": True},
        "sha256": {"S": "ab" * 32},
        "size_bytes": {"N": "2048"},
        "version_id": {"S": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"},
        "verified_by": {"S": "tag"},
        "archived_at": {"S": "2026-10-02T03:00:00Z"},
        "restore": {
            "M": {
                "status": {"S": "restored"},
                "tier": {"S": "Standard"},
                "days": {"N": "7"},
                "requested_at": {"S": "2026-11-20T10:00:00Z"},
                "checked_at": {"S": "2026-11-20T22:00:00Z"},
                "readable_until": {"NULL": True},
            }
        },
    }
}
# As an operator re-created it by hand: the bucket, the date, the lock; nothing else.
MADE_BY_HAND = {
    "M": {
        "bucket": {"S": "dr-archive"},
        "storage_class": {"S": "DEEP_ARCHIVE"},
        "retain_until": {"S": "2033-10-01T00:00:00Z"},
        "archived_at": {"S": "2026-10-02T03:00:00Z"},
        "deleted_at": {"S": "2026-11-22T12:00:00Z"},
    }
}


@pytest.fixture
def catalog(monkeypatch: pytest.MonkeyPatch) -> Iterator[Catalog]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the in-process mock, never a server
    with mock_aws():
        dynamodb = AwsClients("us-east-1").dynamodb
        create_table(dynamodb, TABLE)
        yield Catalog(dynamodb, TABLE)


def stored_item(catalog: Catalog, archive: dict[str, Any]) -> dict[str, Any]:
    """Put a backup item with this `archive` attribute exactly as given; return the item."""
    record = BackupRecord(
        target="app",
        backup_id=BACKUP_ID,
        status="completed",
        started_at="2026-10-01T00:05:00Z",
        bucket="dr-primary",
        key=DUMP,
        manifest_key=MANIFEST,
    )
    item = {**to_item(backup_item(record)), "archive": archive}
    catalog.table.client.put_item(TableName=TABLE, Item=item)
    return item


def item_now(catalog: Catalog) -> dict[str, Any]:
    found: dict[str, Any] = catalog.table.client.get_item(
        TableName=TABLE, Key=key(target_pk("app"), backup_sk(BACKUP_ID)), ConsistentRead=True
    )["Item"]
    return found


def test_an_archive_written_by_a_run_reads_typed() -> None:
    # Given the sub-document as the archive run stores it (plain fields, nulls included)
    written = {
        "bucket": "dr-archive",
        "key": DUMP,
        "lock_mode": None,
        "size_bytes": 2048,
        "verified_by": "tag",
        "archived_at": "2026-10-02T03:00:00Z",
        "restore": {"status": "pending", "tier": "Bulk", "days": 2},
    }

    # When it is read
    archive = ArchiveCopy.model_validate(written)

    # Then every field is typed, and it dumps back to the same fields
    assert archive == ArchiveCopy(
        bucket="dr-archive",
        key=DUMP,
        lock_mode=None,
        size_bytes=2048,
        verified_by="tag",
        archived_at="2026-10-02T03:00:00Z",
        restore=ArchiveRestore(status="pending", tier="Bulk", days=2),
    )
    assert archive.model_dump() == written


@pytest.mark.parametrize("archive", [WRITTEN_BY_A_RUN, MADE_BY_HAND], ids=["written by a run", "by hand"])
def test_an_existing_archive_item_round_trips_unchanged(catalog: Catalog, archive: dict[str, Any]) -> None:
    # Given a catalog item in today's shape
    item = stored_item(catalog, archive)

    # When it is read, and written back both ways the jobs write it
    record = catalog.get_backup(BACKUP_ID)
    assert record.archive is not None
    catalog.put_backup(record)
    assert item_now(catalog) == item
    catalog.update_backup("app", BACKUP_ID, {"archive": record.archive.model_dump()})

    # Then the stored attributes are the same, to the last null
    assert item_now(catalog) == item
    # and `backups list --json` shows the sub-document as stored, no field added
    shown = record.model_dump()["archive"]
    assert to_item({"archive": shown})["archive"] == archive


def test_an_update_of_one_field_keeps_the_others_as_stored(catalog: Catalog) -> None:
    # Given an archived backup whose copy is then deleted (as expiry records it)
    stored_item(catalog, WRITTEN_BY_A_RUN)
    archive = catalog.get_backup(BACKUP_ID).archive
    assert archive is not None

    deleted = archive.model_copy(update={"deleted_at": "2033-10-02T00:00:00Z"})
    catalog.update_backup("app", BACKUP_ID, {"archive": deleted.model_dump()})

    # Then the stored map gains `deleted_at` and nothing else changes
    expected = {"M": {**WRITTEN_BY_A_RUN["M"], "deleted_at": {"S": "2033-10-02T00:00:00Z"}}}
    assert item_now(catalog)["archive"] == expected
    reread = catalog.get_backup(BACKUP_ID).archive
    assert reread is not None and reread.deleted_at == "2033-10-02T00:00:00Z"
    assert reread.version_id == "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY"
