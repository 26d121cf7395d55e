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

import contextlib
import re
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, cast

import zstandard

from drsentry.adapters.pgmeta import display_name
from drsentry.adapters.pgtools import PgTool
from drsentry.core.errors import DrsentryError

# Far more table of contents than any schema needs; beyond it the check is left to the restore.
SCHEMA_READ_LIMIT_BYTES = 256 * 1024 * 1024
SCHEMA_READ_TIMEOUT_SECONDS = 120.0
# Small downloads: the table of contents is usually within the first few hundred KiB.
SCHEMA_CHUNK_BYTES = 256 * 1024
# pg_restore's write size into its stdin: bounded, so a highly compressible stretch never
# becomes one huge buffer.
_WRITE_SIZE = 64 * 1024

_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[^\s."(]+)'
_CREATE_TABLE = re.compile(
    rf"^CREATE (?:UNLOGGED )?TABLE (?P<schema>{_IDENTIFIER})\.(?P<name>{_IDENTIFIER}) \($"
)
_COLUMN = re.compile(rf"^    (?P<name>{_IDENTIFIER}) (?P<definition>.+?),?$")
# What may follow a column's type in pg_dump's CREATE TABLE (PostgreSQL 18 names NOT NULL
# constraints: `id bigint CONSTRAINT ev_id_not_null NOT NULL`).
_AFTER_TYPE = re.compile(r" (?:CONSTRAINT|NOT NULL|NULL|DEFAULT|COLLATE|GENERATED|CHECK|REFERENCES|UNIQUE)\b")


class SchemaUnreadable(DrsentryError):
    """The archive's table of contents could not be read before the restore."""


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


class _Feed:
    """pg_restore's stdin for zstd's stream writer, with a limit on bytes and time."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdin is not None
        self._stdin = process.stdin
        self._deadline = time.monotonic() + SCHEMA_READ_TIMEOUT_SECONDS
        self.written = 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > SCHEMA_READ_LIMIT_BYTES:
            raise SchemaUnreadable(
                f"no table of contents within the first {SCHEMA_READ_LIMIT_BYTES // (1024 * 1024)} MiB"
            )
        if time.monotonic() > self._deadline:
            raise SchemaUnreadable(
                f"reading the table of contents took over {SCHEMA_READ_TIMEOUT_SECONDS:g}s"
            )
        self._stdin.write(data)
        self.written += len(data)
        return len(data)


def read_table_columns(chunks: Iterator[bytes], pg_restore: PgTool) -> dict[str, dict[str, str]]:
    """The column lists of a zstd-compressed pg_dump archive's tables, read from its head.

    `chunks` are the stored object's bytes; reading stops (and a generator is closed) as soon
    as pg_restore has the table of contents. SchemaUnreadable says why it could not be read.
    """
    return table_columns(_read_head(chunks, pg_restore, ["--schema-only", "--section=pre-data"]))


def read_listing(chunks: Iterator[bytes], pg_restore: PgTool) -> str:
    """The archive's table of contents with each entry's dependencies (`pg_restore -l --verbose`),
    read from its head like `read_table_columns`: what a partial restore chooses entries from."""
    return _read_head(chunks, pg_restore, ["--list", "--verbose"])


def _read_head(chunks: Iterator[bytes], pg_restore: PgTool, options: list[str]) -> str:
    """pg_restore's output for `options`, fed the decompressed head of the archive from a pipe."""
    with tempfile.TemporaryDirectory(prefix="drsentry-schema-") as directory:
        schema_file = Path(directory) / "schema.sql"
        stderr_file = Path(directory) / "pg_restore.err"
        try:
            with stderr_file.open("wb") as stderr:
                process = subprocess.Popen(
                    [str(pg_restore.path), *options, f"--file={schema_file}"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
        except OSError as exc:
            raise SchemaUnreadable(f"cannot start {pg_restore.path}: {exc.strerror or exc}") from exc
        try:
            _feed(chunks, process)
            try:
                returncode = process.wait(timeout=SCHEMA_READ_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired as exc:
                raise SchemaUnreadable(
                    f"pg_restore did not finish the table of contents within {SCHEMA_READ_TIMEOUT_SECONDS:g}s"
                ) from exc
        except BaseException:
            # Only to stop pg_restore; the cause is re-raised.
            process.kill()
            process.wait()
            raise
        finally:
            if isinstance(chunks, Generator):
                chunks.close()  # ends the download: the rest of the object is data
        if returncode != 0:
            complaint = stderr_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            detail = complaint[0] if complaint else "no message"
            raise SchemaUnreadable(f"pg_restore exited with code {returncode}: {detail}")
        return schema_file.read_text(encoding="utf-8", errors="replace")


def _feed(chunks: Iterator[bytes], process: subprocess.Popen[bytes]) -> None:
    feed = _Feed(process)
    # The stream writer only ever calls write() on what it is given.
    decoder = zstandard.ZstdDecompressor().stream_writer(
        cast(IO[bytes], feed), write_size=_WRITE_SIZE, closefd=False
    )
    try:
        # A broken pipe is the expected end: pg_restore read what it needed and exited.
        with contextlib.suppress(BrokenPipeError):
            for chunk in chunks:
                decoder.write(chunk)
    except zstandard.ZstdError as exc:
        raise SchemaUnreadable(f"the archive is not a readable zstd stream: {exc}") from exc
    finally:
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
