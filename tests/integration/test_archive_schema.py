"""The columns of a backup's tables, read from the head of its archive before a masked restore."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import psycopg
import pytest
import zstandard

from drsentry.adapters.pgtools import find_tool, pg_environment
from drsentry.operator.archive_schema import SchemaUnreadable, read_table_columns

pytestmark = pytest.mark.integration

CHUNK = 64 * 1024


def _stored_archive(dsn: str) -> bytes:
    """The database as a backup stores it: pg_dump's custom format, uncompressed, then zstd."""
    dsn_without_password, env = pg_environment(dsn, "drsentry-test")
    dump = subprocess.run(
        [str(find_tool("pg_dump").path), "--format=custom", "--compress=0", dsn_without_password],
        capture_output=True,
        env=env,
        check=True,
    ).stdout
    return zstandard.ZstdCompressor(level=1).compress(dump)


class Download:
    """The stored object's chunks, counting what was read and whether the download was closed."""

    def __init__(self, stored: bytes) -> None:
        self.stored = stored
        self.read_bytes = 0
        self.closed = False

    def chunks(self) -> Iterator[bytes]:
        try:
            for offset in range(0, len(self.stored), CHUNK):
                chunk = self.stored[offset : offset + CHUNK]
                self.read_bytes += len(chunk)
                yield chunk
        finally:
            self.closed = True


def test_columns_come_from_the_archives_head_without_downloading_the_data(source_db: str) -> None:
    # Given the sample database with MBs of data, stored as a backup stores it
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create table filler as select i, md5(i::text) as digest from generate_series(1, 200000) i"
        )
    download = Download(_stored_archive(source_db))
    assert len(download.stored) > 2 * 1024 * 1024

    # When its columns are read
    columns = read_table_columns(download.chunks(), find_tool("pg_restore"))

    # Then every table's columns and types are there, from the first chunks only
    assert columns["profiles"] == {
        "id": "bigint",
        "organization_id": "bigint",
        "email": "text",
        "full_name": "text",
        "phone": "text",
        "created_at": "timestamp with time zone",
    }
    assert set(columns) >= {"organizations", "profiles", "services", "appointments", "sessions", "filler"}
    assert download.read_bytes <= 4 * CHUNK
    assert download.closed


def test_an_object_that_is_not_an_archive_is_unreadable_not_a_crash() -> None:
    garbage = Download(b"not zstd at all" * 1000)

    with pytest.raises(SchemaUnreadable, match="not a readable zstd stream"):
        read_table_columns(garbage.chunks(), find_tool("pg_restore"))
    assert garbage.closed


def test_an_archive_pg_restore_rejects_is_unreadable_with_its_complaint() -> None:
    not_a_dump = Download(zstandard.ZstdCompressor().compress(b"PGDMP but not really" * 100))

    with pytest.raises(SchemaUnreadable, match=r"pg_restore exited with code 1: .*"):
        read_table_columns(not_a_dump.chunks(), find_tool("pg_restore"))
