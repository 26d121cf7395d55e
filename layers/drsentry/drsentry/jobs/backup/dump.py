"""The dump: the cluster's roles (`jobs.backup.globals`), then `pg_dump` of one exported
snapshot, streamed through zstd and SHA-256 into the backup object's multipart upload, under
a watchdog that stops it before the run's deadline.

One REPEATABLE READ transaction exports a snapshot (`drsentry.adapters.postgres`); pg_dump
dumps that snapshot (``--snapshot``) while the transaction reads the row counts, functions,
RLS policies, schema fingerprint, the roles referenced and every table's owner and grants in
it, so the manifest describes exactly what the dump holds. pg_dump writes its custom format
uncompressed (``-Z0``) and drsentry compresses it with multi-threaded zstd: pg_dump's own
gzip is single-threaded and the slowest part of a dump. Nothing is staged on disk; memory is
bounded by the upload's part buffers.

The upload completes only after pg_dump exited 0 with no error on stderr; otherwise the
multipart upload is aborted and no object remains.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import zstandard

from drsentry.adapters.buckets import Bucket, StoredObject, checksum_tags
from drsentry.adapters.pgmeta import DatabaseFacts
from drsentry.adapters.pgtools import (
    PgTool,
    StderrCollector,
    error_lines,
    find_tool,
    pg_environment,
    require_compatible,
)
from drsentry.adapters.postgres import SnapshotSession
from drsentry.adapters.secrets import redact, sanitize
from drsentry.core.deadlines import Remaining
from drsentry.core.errors import BackupFailed, DrsentryError
from drsentry.core.observability import logger
from drsentry.core.progress import NO_PROGRESS, Progress
from drsentry.jobs.backup.globals import CapturedGlobals, capture_globals
from drsentry.jobs.backup.rules import COMPRESSION, tool_failure

READ_CHUNK = 1024 * 1024
# pg_dump waits at most this long for a table lock (a migration, VACUUM FULL) instead of
# hanging until the function is killed without a record.
LOCK_WAIT_TIMEOUT = "120s"
WATCHDOG_INTERVAL_SECONDS = 1.0
# Stop this long before Lambda's hard limit so the run can abort and record itself.
TIMEOUT_MARGIN_SECONDS = 45.0


class Watchdog:
    """The run's deadline as the dump sees it, and the thread that enforces it: a run blocked
    (a long count, a pg_dump waiting on a lock) is stopped before Lambda kills it, so it can
    still abort its upload and record itself."""

    def __init__(self, remaining_seconds: Remaining) -> None:
        self._remaining_seconds = remaining_seconds
        self.timed_out = threading.Event()
        self._finished = threading.Event()
        # What the watchdog stops when time runs out: the facts query and pg_dump.
        self.session: SnapshotSession | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def time_left(self) -> float | None:
        return self._remaining_seconds()

    def timeout_message(self) -> str:
        remaining = self.time_left()
        left = f"{remaining:.0f}s" if remaining is not None else "no time"
        return f"timed out: {left} of run time left, stopping before the function is killed"

    def check(self) -> None:
        """Raise BackupFailed when the watchdog fired or the margin is reached."""
        remaining = self.time_left()
        if self.timed_out.is_set() or (remaining is not None and remaining < TIMEOUT_MARGIN_SECONDS):
            raise BackupFailed(self.timeout_message())

    @contextmanager
    def watching(self) -> Iterator[None]:
        thread = threading.Thread(target=self._watch, daemon=True, name="backup-watchdog")
        thread.start()
        try:
            yield
        finally:
            self._finished.set()

    def _watch(self) -> None:
        while not self._finished.wait(WATCHDOG_INTERVAL_SECONDS):
            remaining = self.time_left()
            if remaining is None or remaining >= TIMEOUT_MARGIN_SECONDS:
                continue
            self.timed_out.set()
            if self.process is not None and self.process.poll() is None:
                self.process.kill()
            if self.session is not None:
                self.session.cancel()
            return


@dataclass
class DumpOutcome:
    stored: StoredObject
    pg_dump: PgTool
    facts: DatabaseFacts
    # None for the second and later databases of a backup of several: the roles are the server's.
    globals: CapturedGlobals | None


@dataclass
class DatabaseDump:
    """One target's database dumped into `key` of the backup bucket."""

    target: str
    backup_id: str
    bucket: Bucket
    key: str
    compression_level: int
    pg_bin_dir: str | None
    watchdog: Watchdog
    progress: Progress = NO_PROGRESS
    # The roles belong to the server: a backup of several databases captures them once.
    capture_roles: bool = True

    def run(self, dsn: str) -> DumpOutcome:
        pg_dump = find_tool("pg_dump", self.pg_bin_dir)
        pg_dumpall = find_tool("pg_dumpall", self.pg_bin_dir)
        logger.info(
            "backup starting",
            extra={
                "target": self.target,
                "backup_id": self.backup_id,
                "database": redact(dsn),
                "pg_dump": str(pg_dump.path),
                "pg_dump_version": pg_dump.version,
                "pg_dump_origin": pg_dump.origin,
            },
        )
        with SnapshotSession.open(dsn, application_name="drsentry-backup") as session:
            self.watchdog.session = session
            try:
                server_version = session.server_version()
                require_compatible(pg_dump, server_version)
                require_compatible(pg_dumpall, server_version)
                self.watchdog.check()
                # The roles first: a failed pg_dumpall fails the backup before any object exists.
                cluster_globals = (
                    capture_globals(
                        pg_dumpall,
                        dsn,
                        role_passwords=session.can_read_role_passwords(),
                        time_left=self._time_before_margin(),
                    )
                    if self.capture_roles
                    else None
                )
                self.watchdog.check()
                # The facts are read in the snapshot while pg_dump dumps it: counting every row
                # takes about as long as scanning the database, and need not come first.
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-facts") as pool:
                    reading = pool.submit(session.read_facts)
                    try:
                        stored = self._stream(dsn, pg_dump, session.snapshot, reading)
                    except BaseException:
                        session.cancel()  # the dump failed: stop counting
                        raise
                    facts = reading.result()
            finally:
                self.watchdog.session = None  # closed with the block: nothing left to cancel
        return DumpOutcome(stored=stored, pg_dump=pg_dump, facts=facts, globals=cluster_globals)

    def _time_before_margin(self) -> float | None:
        remaining = self.watchdog.time_left()
        return None if remaining is None else remaining - TIMEOUT_MARGIN_SECONDS

    def _stream(self, dsn: str, pg_dump: PgTool, snapshot: str, facts: Future[DatabaseFacts]) -> StoredObject:
        dsn_without_password, env = pg_environment(dsn, "drsentry-pg_dump")
        command = [
            str(pg_dump.path),
            "--format=custom",
            "--compress=0",
            f"--snapshot={snapshot}",
            f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
            "--no-password",
            f"--dbname={dsn_without_password}",
        ]
        # What is known before the first byte is metadata; the SHA-256 and size become tags.
        writer = self.bucket.writer(
            self.key,
            metadata={"backup-id": self.backup_id, "target": self.target, "compression": COMPRESSION},
        )
        self.progress.phase(f"backup {self.target}: pg_dump")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.watchdog.process = process
        assert process.stdout is not None and process.stderr is not None
        stderr = StderrCollector(process.stderr, "pg_dump")
        stderr.start()
        try:
            # Frame checksums let a full read (verify's "archive readable") catch a flipped byte.
            compressor = zstandard.ZstdCompressor(
                level=self.compression_level, threads=-1, write_checksum=True
            )
            # MultipartWriter is a write-only binary stream: write() is all zstd needs of it.
            zstd_output = compressor.stream_writer(
                writer,  # type: ignore[arg-type]
                closefd=False,
                write_size=READ_CHUNK,
            )
            with zstd_output as zstd_stream:
                while chunk := process.stdout.read(READ_CHUNK):
                    zstd_stream.write(chunk)
                    self.progress.advance(len(chunk))
                    self.watchdog.check()
            self.watchdog.check()  # the watchdog may have killed pg_dump: EOF is not success
            return_code = process.wait()
            stderr.join(timeout=30)
            errors = error_lines(stderr.text)
            if return_code != 0 or errors:
                lines = errors or stderr.text.splitlines()
                raise BackupFailed(sanitize(tool_failure("pg_dump", return_code, lines), dsn))
            if writer.size_bytes == 0:
                raise BackupFailed("pg_dump produced no output")
            facts.result()  # a backup whose facts could not be read is not completed
            stored = writer.complete()
        except BaseException:
            _stop(process)
            writer.abort()
            raise
        finally:
            process.stdout.close()
        try:
            # Tags, not metadata: known only after the last byte, and one request where
            # metadata would need the object copied onto itself.
            self.bucket.put_tags(stored.key, checksum_tags(stored), stored.version_id)
        except DrsentryError:
            # Withdrawn (a delete marker): the backup role may not destroy a version.
            self.bucket.hide([stored.key])
            raise
        return stored


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=30)
