"""The head of a backup object as pg_restore reads it: its table of contents, before any restore.

pg_dump's custom format begins with its table of contents, and drsentry stores it compressed
with zstd from a pipe, so the TOC comes first in the object: pg_restore reading the
decompressed head from a pipe prints what it was asked for (`--list`, `--schema-only
--section=pre-data`) and exits without reading any data (64 KiB of the sample's 21 MB
archive). The caller's download stops there. Used before a partial restore or masking
(operator/archive_schema.py) and before verify restores into a throwaway server (the
extensions the backup needs).
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import IO, cast

import zstandard

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


class SchemaUnreadable(DrsentryError):
    """The archive's table of contents could not be read before the restore."""


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


def read_head(chunks: Iterator[bytes], pg_restore: PgTool, options: list[str]) -> str:
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


def read_listing(chunks: Iterator[bytes], pg_restore: PgTool) -> str:
    """The archive's table of contents with each entry's dependencies (`pg_restore -l --verbose`)."""
    return read_head(chunks, pg_restore, ["--list", "--verbose"])


def listed_extensions(listing: str) -> list[str]:
    """The extensions a `pg_restore --list` creates (`EXTENSION - name` entries), sorted."""
    names = set()
    for line in listing.splitlines():
        if line.startswith(";"):
            continue
        parts = line.split()
        for index, word in enumerate(parts[:-2]):
            if word == "EXTENSION" and parts[index + 1] == "-":
                names.add(parts[index + 2])
                break
    return sorted(names)
