"""The columns of the tables a backup creates, read from its pg_dump archive before any restore.

The catalog record and the manifest name a backup's tables (with their row counts) but not
their columns, so `restore --mask` can check a rule's columns before restoring only against
the archive itself. pg_dump's custom format begins with its table of contents, which holds
every CREATE TABLE: ``pg_restore --schema-only --section=pre-data`` reading the decompressed
head of the object from a pipe prints them and exits without reading any data (64 KiB of the
sample's 21 MB archive). The caller's download stops there.

The column lists come from that SQL text, as pg_dump writes it: one column a line, four
spaces in, the name first (quoted when it needs quotes). A table whose columns the text does
not list in full (``INHERITS``, a typed table ``OF type``) is left out rather than guessed;
masking checks every rule again inside its transaction after the restore, so what cannot be
checked here is still never applied blindly.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from drsentry.adapters.archive_head import SCHEMA_CHUNK_BYTES, SchemaUnreadable, read_head
from drsentry.adapters.pgmeta import display_name
from drsentry.adapters.pgtools import PgTool

# Where the head of the archive is read (adapters/archive_head.py): also what callers here use.
__all__ = ["SCHEMA_CHUNK_BYTES", "SchemaUnreadable", "read_listing", "read_table_columns", "table_columns"]

_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[^\s."(]+)'
_CREATE_TABLE = re.compile(
    rf"^CREATE (?:UNLOGGED )?TABLE (?P<schema>{_IDENTIFIER})\.(?P<name>{_IDENTIFIER}) \($"
)
_COLUMN = re.compile(rf"^    (?P<name>{_IDENTIFIER}) (?P<definition>.+?),?$")
# What may follow a column's type in pg_dump's CREATE TABLE (PostgreSQL 18 names NOT NULL
# constraints: `id bigint CONSTRAINT ev_id_not_null NOT NULL`).
_AFTER_TYPE = re.compile(r" (?:CONSTRAINT|NOT NULL|NULL|DEFAULT|COLLATE|GENERATED|CHECK|REFERENCES|UNIQUE)\b")


def _unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier


def table_columns(schema_sql: str) -> dict[str, dict[str, str]]:
    """Table (as pgmeta names it) -> column -> type as pg_dump wrote it, from pg_dump's SQL."""
    tables: dict[str, dict[str, str]] = {}
    lines = schema_sql.splitlines()
    index = 0
    while index < len(lines):
        create = _CREATE_TABLE.match(lines[index])
        index += 1
        if create is None:
            continue
        columns: dict[str, str] = {}
        while index < len(lines) and not lines[index].startswith(")"):
            column = _COLUMN.match(lines[index])
            # A table constraint line starts with the keyword; a column named so is quoted.
            if column is not None and column["name"] != "CONSTRAINT":
                type_name = _AFTER_TYPE.split(column["definition"], maxsplit=1)[0]
                columns[_unquote(column["name"])] = type_name.strip()
            index += 1
        if index >= len(lines):
            break
        closing = lines[index].strip()
        following = lines[index + 1].strip() if closing == ")" and index + 1 < len(lines) else ""
        if not following.startswith("INHERITS"):
            tables[display_name(_unquote(create["schema"]), _unquote(create["name"]))] = columns
    return tables


def read_table_columns(chunks: Iterator[bytes], pg_restore: PgTool) -> dict[str, dict[str, str]]:
    """The column lists of a zstd-compressed pg_dump archive's tables, read from its head.

    `chunks` are the stored object's bytes; reading stops (and a generator is closed) as soon
    as pg_restore has the table of contents. SchemaUnreadable says why it could not be read.
    """
    return table_columns(read_head(chunks, pg_restore, ["--schema-only", "--section=pre-data"]))


def read_listing(chunks: Iterator[bytes], pg_restore: PgTool) -> str:
    """The archive's table of contents with each entry's dependencies (`pg_restore -l --verbose`),
    read from its head like `read_table_columns`: what a partial restore chooses entries from."""
    return read_head(chunks, pg_restore, ["--list", "--verbose"])
