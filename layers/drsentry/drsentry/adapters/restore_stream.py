"""The streaming restore pipeline: S3 object → SHA-256 → zstd → ``pg_restore`` on stdin.

Shared by verify (into a scratch database) and ``drsentry restore`` (into the user's).
One pass over the object does everything: every downloaded byte goes through the
SHA-256 (never S3's ETag) and the zstd decoder, and the decoded archive is piped into
``pg_restore --exit-on-error``. Two threads share the work so pg_restore never waits for
drsentry: the caller's downloads, hashes and decodes, a feeder thread writes to
pg_restore's stdin (a 1 MiB pipe where Linux allows it). Nothing is staged on disk;
memory holds one downloaded chunk and a bounded queue of decoded slices.

A corrupt object must be *reported*, not crash the run, and reported precisely:
- when zstd rejects the stream, or it ends mid-frame (a truncated object), the archive is
  unreadable; pg_restore is stopped at once because the rest can never reach it;
- when pg_restore fails, its first error lines are kept, and an archive-format complaint
  ("could not read from input file", "unexpected block ID") also marks the archive unreadable;
- in every case the download continues to the last byte, so the caller can still compare
  the object's size and SHA-256 with the catalog's and name the real cause.
``pg_restore -l`` (a TOC listing) would not do: it exits 0 on a flipped byte or a cut file.

The password goes to pg_restore through ``PGPASSWORD``, never on its command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import zstandard

from drsentry.adapters.buckets import ObjectStore
from drsentry.adapters.pgtools import PgTool, StderrCollector, error_lines, pg_environment
from drsentry.adapters.secrets import sanitize
from drsentry.core.deadlines import no_deadline
from drsentry.core.errors import DrsentryError, PgToolsError
from drsentry.core.observability import logger
from drsentry.core.progress import NO_PROGRESS, Progress

# Decode 32 KiB of the object at a time: a highly compressible stretch (blank filler)
# expands 100x or more, and one 1 MiB download chunk must not become one huge buffer.
DECODE_SLICE = 32 * 1024
# Decoded slices waiting for pg_restore: with the pipe, a few MiB of read-ahead.
FEED_QUEUE_SLICES = 16
PIPE_BYTES = 1024 * 1024
# The restore session's settings: indexes are built after the data, and with PostgreSQL's
# default 64 MB each sort of a large table spills to disk (on the benchmark database the
# restore takes 0.5-0.9 s longer). Settings in the caller's PGOPTIONS still win.
RESTORE_SESSION_SETTINGS = {"maintenance_work_mem": "256MB"}
STOP_GRACE_SECONDS = 10.0
WATCHDOG_INTERVAL_SECONDS = 0.5
# pg_restore's own words for an archive it cannot read (as opposed to SQL that fails).
_ARCHIVE_COMPLAINT = re.compile(
    r"input file|end of file|magic string|file header|block id|data block|corrupt|dumpid"
    r"|file format|uncompress",
    re.IGNORECASE,
)


class RestoreFailed(DrsentryError):
    """A restore ran and did not complete; the message says why."""


class RestoreTimedOut(RestoreFailed):
    """The run's time ran out during the restore; pg_restore was stopped."""


@dataclass
class RestoreOutcome:
    """What one pass over a backup object found. Problems are fields, not exceptions, so a
    caller can report each of them (checksum, archive, restore) separately."""

    bucket: str
    key: str
    size_bytes: int = 0
    sha256: str = ""
    restore_seconds: float = 0.0
    frames: int = 0
    archive_error: str | None = None
    restore_error: str | None = None
    pg_restore_exit: int | None = None
    pg_restore_stderr: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def restored(self) -> bool:
        """pg_restore ran to the end of the archive and exited 0."""
        return self.restore_error is None and self.archive_error is None and self.pg_restore_exit == 0

    def raise_for_failure(self) -> None:
        """For callers that only need "did it work": one RestoreFailed naming the cause."""
        if self.archive_error:
            raise RestoreFailed(f"s3://{self.bucket}/{self.key}: archive unreadable: {self.archive_error}")
        if self.restore_error:
            raise RestoreFailed(f"s3://{self.bucket}/{self.key}: restore failed: {self.restore_error}")


class _ZstdFrames:
    """Decodes a stream of one or more zstd frames and knows whether the last one ended."""

    def __init__(self) -> None:
        self._decompressor = zstandard.ZstdDecompressor()
        self._frame = self._decompressor.decompressobj()
        self.frames = 0
        self._in_frame = False

    def decompress(self, chunk: bytes | memoryview) -> bytes:
        pieces: list[bytes] = []
        while chunk:
            self._in_frame = True
            pieces.append(self._frame.decompress(chunk))
            if not self._frame.eof:
                break
            # One frame ended; anything after it is the next frame (a multi-frame writer).
            self.frames += 1
            self._in_frame = False
            chunk = self._frame.unused_data
            self._frame = self._decompressor.decompressobj()
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    @property
    def complete(self) -> bool:
        return self.frames > 0 and not self._in_frame


class _Watchdog(threading.Thread):
    """Kills pg_restore when the run's time is up, even while a write to it is blocked."""

    def __init__(
        self, process: subprocess.Popen[bytes], remaining_seconds: Callable[[], float | None]
    ) -> None:
        super().__init__(daemon=True, name="pg_restore-watchdog")
        self._process = process
        self._remaining = remaining_seconds
        self._done = threading.Event()
        self.fired = threading.Event()

    def run(self) -> None:
        while not self._done.wait(WATCHDOG_INTERVAL_SECONDS):
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                self.fired.set()
                if self._process.poll() is None:
                    self._process.kill()
                return

    def stop(self) -> None:
        self._done.set()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: the server rolls back whatever the dropped session had open."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_GRACE_SECONDS)


def _write(process: subprocess.Popen[bytes], data: bytes) -> bool:
    """Feed pg_restore; False once it has gone away (it exited, or the watchdog killed it)."""
    assert process.stdin is not None
    try:
        process.stdin.write(data)
    except (BrokenPipeError, ValueError):
        return False
    return True


class _Feeder(threading.Thread):
    """Writes the decoded archive to pg_restore's stdin, so that downloading and decoding
    the next chunk overlap with pg_restore reading this one. Once pg_restore has gone away
    it keeps taking slices (and drops them), so the decoding side never blocks on it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True, name="pg_restore-feeder")
        self._process = process
        self._slices: queue.Queue[bytes | None] = queue.Queue(maxsize=FEED_QUEUE_SLICES)
        self.feeding = True

    def put(self, data: bytes) -> None:
        self._slices.put(data)

    def run(self) -> None:
        while (data := self._slices.get()) is not None:
            if self.feeding:
                self.feeding = _write(self._process, data)

    def finish(self) -> None:
        """Wait until everything queued has been written (or dropped)."""
        if self.is_alive():
            self._slices.put(None)
            self.join()


def _widen_pipe(pipe: object) -> None:
    """1 MiB instead of Linux's 64 KiB pipe: more read-ahead for pg_restore. Best effort."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[attr-defined]


def stream_restore(
    store: ObjectStore,
    bucket: str,
    key: str,
    dsn: str,
    pg_restore: PgTool,
    *,
    options: Sequence[str] = (),
    remaining_seconds: Callable[[], float | None] = no_deadline,
    application_name: str = "drsentry-restore",
    session_settings: Mapping[str, str] = RESTORE_SESSION_SETTINGS,
    keep_owners: bool = False,
    progress: Progress = NO_PROGRESS,
) -> RestoreOutcome:
    """Restore s3://bucket/key (a drsentry backup: zstd over pg_dump's custom format) into `dsn`.

    Raises StorageError when the object cannot be read at all (missing, access denied,
    download interrupted), PgToolsError when pg_restore cannot start, and RestoreTimedOut
    when `remaining_seconds()` reaches 0 (pg_restore is killed first). Everything the
    object or pg_restore got wrong is returned in the outcome instead. With `keep_owners`
    (a real recovery) owners and grants come back as dumped; otherwise (a scratch database)
    everything is owned by the restoring user.
    """
    outcome = RestoreOutcome(bucket=bucket, key=key)
    command, env = _pg_restore_command(
        pg_restore, dsn, options, application_name, session_settings, keep_owners=keep_owners
    )
    chunks = store.iter_chunks(bucket, key)  # opened lazily: a missing object raises on first next()
    started = time.monotonic()
    process = _start(command, env, pg_restore)
    assert process.stdin is not None and process.stderr is not None
    stderr = StderrCollector(process.stderr, "pg_restore")
    stderr.start()
    _widen_pipe(process.stdin)
    watchdog = _Watchdog(process, remaining_seconds)
    watchdog.start()
    feeder = _Feeder(process)
    feeder.start()
    try:
        _feed_archive(
            chunks,
            outcome,
            process=process,
            feeder=feeder,
            watchdog=watchdog,
            started=started,
            progress=progress,
        )
        with contextlib.suppress(BrokenPipeError):  # pg_restore already exited; its exit code tells why
            process.stdin.close()
        outcome.pg_restore_exit = _wait(process, watchdog, started, outcome.size_bytes)
    except BaseException:
        _stop(process)
        raise
    finally:
        feeder.finish()
        watchdog.stop()
        stderr.join(timeout=STOP_GRACE_SECONDS)
        process.stderr.close()
    outcome.restore_seconds = round(time.monotonic() - started, 3)
    outcome.pg_restore_stderr = sanitize(stderr.text, dsn)
    _judge_pg_restore(outcome)
    logger.info(
        "restore stream finished",
        extra={
            "key": key,
            "size_bytes": outcome.size_bytes,
            "restore_seconds": outcome.restore_seconds,
            "pg_restore_exit": outcome.pg_restore_exit,
            "archive_error": outcome.archive_error,
            "restore_error": outcome.restore_error,
        },
    )
    return outcome


def _pg_restore_command(
    pg_restore: PgTool,
    dsn: str,
    options: Sequence[str],
    application_name: str,
    session_settings: Mapping[str, str],
    *,
    keep_owners: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """pg_restore's command line and environment: the password in PGPASSWORD, never in the command."""
    dsn_without_password, env = pg_environment(dsn, application_name)
    env["PGOPTIONS"] = session_options(session_settings, env.get("PGOPTIONS", ""))
    command = [
        str(pg_restore.path),
        *([] if keep_owners else ["--no-owner", "--no-privileges"]),
        "--exit-on-error",
        "--no-password",
        *options,
        f"--dbname={dsn_without_password}",
    ]
    return command, env


def _start(command: list[str], env: dict[str, str], pg_restore: PgTool) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
    except OSError as exc:
        raise PgToolsError(f"cannot start {pg_restore.path}: {exc.strerror or exc}") from exc


def _feed_archive(
    chunks: Iterable[bytes],
    outcome: RestoreOutcome,
    *,
    process: subprocess.Popen[bytes],
    feeder: _Feeder,
    watchdog: _Watchdog,
    started: float,
    progress: Progress,
) -> None:
    """The one pass over the object: every byte hashed, the decoded archive queued for pg_restore.

    An unreadable archive stops pg_restore at once, but not the download: the caller compares
    the object's size and SHA-256 with the catalog's to name the real cause.
    """
    digest = hashlib.sha256()
    decoder = _ZstdFrames()
    for chunk in chunks:
        digest.update(chunk)
        outcome.size_bytes += len(chunk)
        progress.advance(len(chunk))
        if watchdog.fired.is_set():
            raise RestoreTimedOut(_timed_out(started, outcome.size_bytes))
        if outcome.archive_error is not None:
            continue  # still hashing to the last byte, for the checksum check
        outcome.archive_error = _decode(chunk, decoder, feeder, outcome.size_bytes)
        if outcome.archive_error is not None:
            _stop(process)
    feeder.finish()
    outcome.sha256 = digest.hexdigest()
    outcome.frames = decoder.frames
    if outcome.archive_error is None and not decoder.complete:
        outcome.archive_error = (
            f"truncated: the zstd stream ends mid-frame after {outcome.size_bytes:,} bytes"
            if outcome.size_bytes
            else "the object is empty"
        )
        # What pg_restore received so far is only part of the archive; do not let it finish.
        _stop(process)


def session_options(settings: Mapping[str, str], existing: str = "") -> str:
    """PGOPTIONS for pg_restore's session: ours first, so that the caller's own win."""
    ours = " ".join(f"-c {name}={value}" for name, value in settings.items())
    return f"{ours} {existing}".strip()


def _decode(chunk: bytes, decoder: _ZstdFrames, feeder: _Feeder, size_bytes: int) -> str | None:
    """Decode one downloaded chunk slice by slice into the feeder; the archive error, if any."""
    view = memoryview(chunk)
    for start in range(0, len(view), DECODE_SLICE):
        try:
            archive = decoder.decompress(view[start : start + DECODE_SLICE])
        except zstandard.ZstdError as exc:
            return f"zstd stream is corrupt after {size_bytes:,} bytes of the object: {exc}"
        if archive and feeder.feeding:
            feeder.put(archive)
    return None


def _timed_out(started: float, size_bytes: int) -> str:
    elapsed = time.monotonic() - started
    return (
        f"timed out: restore stopped after {elapsed:.0f}s ({size_bytes:,} bytes downloaded) "
        "to finish before the run's time limit"
    )


def _wait(process: subprocess.Popen[bytes], watchdog: _Watchdog, started: float, size_bytes: int) -> int:
    """Wait for pg_restore (index builds come after the last byte), minding the deadline."""
    while True:
        try:
            return_code = process.wait(timeout=WATCHDOG_INTERVAL_SECONDS)
        except subprocess.TimeoutExpired:
            continue
        if watchdog.fired.is_set():
            raise RestoreTimedOut(_timed_out(started, size_bytes))
        return return_code


def _judge_pg_restore(outcome: RestoreOutcome) -> None:
    errors = error_lines(outcome.pg_restore_stderr)
    outcome.warnings = [
        line.strip() for line in outcome.pg_restore_stderr.splitlines() if "warning:" in line.lower()
    ][:5]
    if outcome.archive_error is not None:
        outcome.restore_error = "not completed: the archive could not be read to its end"
        return
    if outcome.pg_restore_exit == 0 and not errors:
        return
    if outcome.pg_restore_exit is not None and outcome.pg_restore_exit < 0:
        reason = f"pg_restore was killed by signal {-outcome.pg_restore_exit}"
    else:
        reason = f"pg_restore exited with code {outcome.pg_restore_exit}"
    shown = errors or outcome.pg_restore_stderr.splitlines()
    detail = "; ".join(line.strip() for line in shown[:3])
    outcome.restore_error = f"{reason}: {detail}" if detail else reason
    if any(_ARCHIVE_COMPLAINT.search(line) for line in errors):
        outcome.archive_error = f"pg_restore could not read the archive: {detail}"
