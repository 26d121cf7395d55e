"""Backup: `pg_dump` streamed through zstd and SHA-256 into an S3 multipart upload.

One REPEATABLE READ transaction exports a snapshot; pg_dump dumps that snapshot
(``--snapshot``) while the transaction reads the row counts, functions, RLS policies and
schema fingerprint in it, so the manifest describes exactly what the dump holds.
pg_dump writes its custom format uncompressed (``-Z0``) and drsentry compresses it with
multi-threaded zstd: pg_dump's own gzip is single-threaded and the slowest part of a dump.
Nothing is staged on disk; memory is bounded by the upload's part buffers.

The upload completes only after pg_dump exited 0 with no error on stderr; otherwise the
multipart upload is aborted, no object remains, and the catalog records `failed`.
"""

from __future__ import annotations

import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
import zstandard
from pydantic import Field

from drsentry.adapters.buckets import StoredObject, checksum_tags
from drsentry.adapters.pgmeta import DatabaseFacts, read_facts, server_version
from drsentry.adapters.pgtools import (
    PgTool,
    StderrCollector,
    error_lines,
    find_tool,
    pg_environment,
    require_compatible,
)
from drsentry.adapters.secrets import redact, sanitize
from drsentry.core import gfs, observability
from drsentry.core.errors import BackupFailed, CatalogError, CatalogWriteFailed, DrsentryError
from drsentry.core.events import ScheduledEvent
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, RunNotice, Tier, iso, new_backup_id
from drsentry.jobs.replication.job import replicate_backup
from drsentry.jobs.runner import RunResult, run_for_targets
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.rules import storage_problems
from drsentry.jobs.storage_manifest.write import write_storage_manifests

READ_CHUNK = 1024 * 1024
# Outside Lambda a run has no deadline; a crashed one's lock expires after this.
LOCK_TTL_SECONDS = 3 * 3600
# pg_dump waits at most this long for a table lock (a migration, VACUUM FULL) instead of
# hanging until the function is killed without a record.
LOCK_WAIT_TIMEOUT = "120s"
WATCHDOG_INTERVAL_SECONDS = 1.0
# Stop this long before Lambda's hard limit so the run can abort and record itself.
TIMEOUT_MARGIN_SECONDS = 45.0
MANIFEST_FORMAT = "drsentry-backup/1"
COMPRESSION = "zstd"


def object_keys(prefix: str, target: str, backup_id: str) -> tuple[str, str]:
    """`{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}.dump` and its manifest."""
    day = f"{backup_id[0:4]}/{backup_id[4:6]}/{backup_id[6:8]}"
    base = f"{prefix}{target}/{day}/{backup_id}"
    return f"{base}.dump", f"{base}.manifest.json"


@dataclass
class DumpOutcome:
    stored: StoredObject
    pg_dump: PgTool
    facts: DatabaseFacts


class BackupRun:
    """One backup of one target."""

    def __init__(self, runtime: Runtime, target_name: str) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.target = runtime.config.target(target_name)
        self.started = runtime.clock()
        self.backup_id = new_backup_id(self.started)
        self.key, self.manifest_key = object_keys(
            self.config.storage.prefix, self.target.name, self.backup_id
        )
        self.bucket = runtime.buckets.bucket(self.config.storage.bucket)
        self._dsn = ""
        # What the watchdog stops when time runs out: the facts query and pg_dump.
        self._conn: psycopg.Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._timed_out = threading.Event()
        self._finished = threading.Event()

    def _time_left(self) -> float | None:
        return self.runtime.remaining_seconds()

    def _timeout_message(self) -> str:
        remaining = self._time_left()
        left = f"{remaining:.0f}s" if remaining is not None else "no time"
        return f"timed out: {left} of run time left, stopping before the function is killed"

    def _check_time(self) -> None:
        remaining = self._time_left()
        if self._timed_out.is_set() or (remaining is not None and remaining < TIMEOUT_MARGIN_SECONDS):
            raise BackupFailed(self._timeout_message())

    def _watchdog(self) -> None:
        """Stop a run that is blocked (a long count, a pg_dump waiting on a lock) before
        Lambda kills it, so it can still abort its upload and record itself."""
        while not self._finished.wait(WATCHDOG_INTERVAL_SECONDS):
            remaining = self._time_left()
            if remaining is None or remaining >= TIMEOUT_MARGIN_SECONDS:
                continue
            self._timed_out.set()
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
            if self._conn is not None:
                self._conn.cancel_safe()
            return

    def _lock_ttl(self) -> int:
        remaining = self._time_left()
        # In Lambda the run cannot outlive its invocation: the lock need not either.
        return LOCK_TTL_SECONDS if remaining is None else int(remaining) + 60

    def execute(self) -> BackupRecord:
        catalog = self.runtime.catalog
        catalog.locks.acquire(self.target.name, self.runtime.run_id, self._lock_ttl(), job="backup")
        watchdog = threading.Thread(target=self._watchdog, daemon=True, name="backup-watchdog")
        watchdog.start()
        try:
            try:
                outcome = self._dump_and_upload()
            except DrsentryError as exc:
                return self._record_failure(self._timeout_message() if self._timed_out.is_set() else str(exc))
            except (OSError, psycopg.Error) as exc:
                if self._timed_out.is_set():
                    return self._record_failure(self._timeout_message())
                first_line = (str(exc).strip().splitlines() or [""])[0]
                return self._record_failure(f"{type(exc).__name__}: {first_line}")
            return self._record_success(outcome)
        finally:
            self._finished.set()
            catalog.locks.release(self.target.name, self.runtime.run_id, job="backup")

    # the dump ------------------------------------------------------------------

    def _dump_and_upload(self) -> DumpOutcome:
        self._dsn = self.runtime.credentials.dsn(dsn=self.target.dsn, secret_name=self.target.dsn_secret)
        pg_dump = find_tool("pg_dump", self.config.pg_bin_dir)
        logger.info(
            "backup starting",
            extra={
                "target": self.target.name,
                "backup_id": self.backup_id,
                "database": redact(self._dsn),
                "pg_dump": str(pg_dump.path),
                "pg_dump_version": pg_dump.version,
                "pg_dump_origin": pg_dump.origin,
            },
        )
        try:
            conn = psycopg.connect(self._dsn, connect_timeout=15, application_name="drsentry-backup")
        except psycopg.OperationalError as exc:
            raise BackupFailed(
                f"cannot connect to {redact(self._dsn)}: {sanitize(str(exc).strip(), self._dsn)}"
            ) from exc
        self._conn = conn
        with conn:
            conn.execute("begin isolation level repeatable read read only")
            # Counting must see what pg_dump sees; pg_dump itself runs with row_security off.
            conn.execute("set local row_security = off")
            snapshot_row = conn.execute("select pg_export_snapshot()").fetchone()
            assert snapshot_row is not None
            require_compatible(pg_dump, server_version(conn))
            self._check_time()
            # The facts are read in the snapshot while pg_dump dumps it: counting every row
            # takes about as long as scanning the database, and need not come first.
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="backup-facts") as pool:
                reading = pool.submit(read_facts, conn)
                try:
                    stored = self._stream_dump(pg_dump, str(snapshot_row[0]), reading)
                except BaseException:
                    conn.cancel_safe()  # the dump failed: stop counting
                    raise
                facts = reading.result()
            conn.execute("commit")
        self._conn = None
        return DumpOutcome(stored=stored, pg_dump=pg_dump, facts=facts)

    def _stream_dump(self, pg_dump: PgTool, snapshot: str, facts: Future[DatabaseFacts]) -> StoredObject:
        dsn_without_password, env = pg_environment(self._dsn, "drsentry-pg_dump")
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
            metadata={"backup-id": self.backup_id, "target": self.target.name, "compression": COMPRESSION},
        )
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._process = process
        assert process.stdout is not None and process.stderr is not None
        stderr = StderrCollector(process.stderr, "pg_dump")
        stderr.start()
        try:
            # Frame checksums let a full read (verify's "archive readable") catch a flipped byte.
            compressor = zstandard.ZstdCompressor(
                level=self.config.storage.compression_level, threads=-1, write_checksum=True
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
                    self._check_time()
            self._check_time()  # the watchdog may have killed pg_dump: EOF is not success
            return_code = process.wait()
            stderr.join(timeout=30)
            errors = error_lines(stderr.text)
            if return_code != 0 or errors:
                raise BackupFailed(self._pg_dump_failure(return_code, errors or stderr.text.splitlines()))
            if writer.size_bytes == 0:
                raise BackupFailed("pg_dump produced no output")
            facts.result()  # a backup whose facts could not be read is not completed
            stored = writer.complete()
        except BaseException:
            self._stop(process)
            writer.abort()
            raise
        finally:
            process.stdout.close()
        try:
            # Tags, not metadata: known only after the last byte, and one request where
            # metadata would need the object copied onto itself.
            self.bucket.put_tags(stored.key, checksum_tags(stored), stored.version_id)
        except DrsentryError:
            self.bucket.delete_all_versions(stored.key)
            raise
        return stored

    def _pg_dump_failure(self, return_code: int, lines: list[str]) -> str:
        if return_code < 0:
            reason = f"pg_dump was killed by signal {-return_code}"
        else:
            reason = f"pg_dump exited with code {return_code}"
        detail = "; ".join(line.strip() for line in lines[:3])
        return sanitize(f"{reason}: {detail}" if detail else reason, self._dsn)

    @staticmethod
    def _stop(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)

    # the record ----------------------------------------------------------------

    def _base_record(self, **fields: Any) -> BackupRecord:
        finished = self.runtime.clock()
        return BackupRecord(
            target=self.target.name,
            backup_id=self.backup_id,
            started_at=iso(self.started),
            finished_at=iso(finished),
            duration_seconds=round((finished - self.started).total_seconds(), 3),
            bucket=self.config.storage.bucket,
            key=self.key,
            manifest_key=self.manifest_key,
            run_id=self.runtime.run_id,
            **fields,
        )

    def _record_success(self, outcome: DumpOutcome) -> BackupRecord:
        tier: Tier | None
        try:
            previous = self.runtime.catalog.latest_completed(self.target.name)
            tier = gfs.assign_tier(self.started, previous.started if previous else None)
        except CatalogError as exc:
            # The manifest is still written, so `drsentry catalog rebuild` can restore the
            # record and its tier once the catalog answers again.
            logger.error("catalog unreadable while recording a backup", extra={"error": str(exc)})
            tier = None
        facts = outcome.facts
        record = self._base_record(
            status="completed",
            size_bytes=outcome.stored.size_bytes,
            sha256=outcome.stored.sha256,
            storage_class="STANDARD",
            tier=tier,
            pg_server_version=facts.server_version,
            pg_dump_version=outcome.pg_dump.version,
            database_size_bytes=facts.database_size_bytes,
            compression=COMPRESSION,
            schema_fingerprint=facts.schema_fingerprint,
            tables=facts.tables,
            replica="pending" if self.config.storage.replica else None,
        )
        manifest = {
            "format": MANIFEST_FORMAT,
            "dump_format": "pg_dump custom format, zstd-compressed",
            "restore_hint": f"zstd -dc {self.backup_id}.dump | pg_restore --dbname=DSN",
            **record.model_dump(),
            **facts.manifest_fields(),
        }
        try:
            self.bucket.put_json(self.manifest_key, manifest)
        except DrsentryError as exc:
            self.bucket.delete_all_versions(self.key)
            return self._record_failure(f"writing the manifest failed, backup object removed: {exc}")
        try:
            self.runtime.catalog.put_backup(record)
        except CatalogError as exc:
            self._emit_metrics(record.model_copy(update={"status": "failed"}))
            raise CatalogWriteFailed(
                f"backup {record.backup_id} is stored at s3://{record.bucket}/{record.key} but its catalog "
                f"record could not be written ({exc}); recover it with "
                f"`drsentry catalog rebuild --target {record.target}`"
            ) from exc
        self._emit_metrics(record)
        logger.info(
            "backup completed",
            extra={
                "target": record.target,
                "backup_id": record.backup_id,
                "size_bytes": record.size_bytes,
                "tier": record.tier,
                "duration_seconds": record.duration_seconds,
            },
        )
        return record

    def _record_failure(self, error: str) -> BackupRecord:
        error = sanitize(error, self._dsn) if self._dsn else error
        record = self._base_record(status="failed", error=error)
        logger.error(
            "backup failed", extra={"target": record.target, "backup_id": record.backup_id, "error": error}
        )
        # Metrics first: if the catalog is down too, the alarm still sees the failure.
        self._emit_metrics(record)
        self.runtime.catalog.put_backup(record)
        return record

    def _newest_completed_age(self) -> float | None:
        try:
            newest = self.runtime.catalog.latest_completed(self.target.name)
        except CatalogError:
            return None  # the alarm treats missing data as stale
        return (self.runtime.clock() - newest.started).total_seconds() if newest else None

    def _emit_metrics(self, record: BackupRecord) -> None:
        target = record.target
        if record.status == "completed":
            observability.put_metric(observability.BACKUP_SUCCESS, "Count", 1, target)
            observability.put_metric(observability.BACKUP_FAILURE, "Count", 0, target)
            observability.put_metric(observability.BACKUP_SIZE_BYTES, "Bytes", record.size_bytes or 0, target)
            observability.put_metric(observability.BACKUP_AGE_SECONDS, "Seconds", 0, target)
            seconds = max(record.duration_seconds or 0.0, 0.001)
            megabytes = (record.database_size_bytes or 0) / 1e6
            observability.put_metric(
                observability.BACKUP_THROUGHPUT_MBPS, "None", megabytes / seconds, target
            )
        else:
            observability.put_metric(observability.BACKUP_SUCCESS, "Count", 0, target)
            observability.put_metric(observability.BACKUP_FAILURE, "Count", 1, target)
            newest_age = self._newest_completed_age()
            if newest_age is not None:
                observability.put_metric(observability.BACKUP_AGE_SECONDS, "Seconds", newest_age, target)
        observability.put_metric(
            observability.BACKUP_DURATION_SECONDS, "Seconds", record.duration_seconds or 0.0, target
        )


def notice_for(record: BackupRecord, run_id: str) -> RunNotice:
    if record.status == "completed":
        size_mb = (record.size_bytes or 0) / 1e6
        # A storage manifest that failed leaves the database backup good: a warning, not a failure.
        storage_failed = storage_problems(record)
        return RunNotice(
            source="backup",
            target=record.target,
            severity="warning" if storage_failed else "info",
            status="completed",
            run_id=run_id,
            summary=(
                f"backup {record.backup_id} completed: {size_mb:.1f} MB "
                f"in {record.duration_seconds:.1f}s ({record.tier})"
                + (f"; storage manifest failed: {'; '.join(storage_failed)}" if storage_failed else "")
            ),
            details={
                "backup_id": record.backup_id,
                "size_bytes": record.size_bytes,
                "tier": record.tier,
                "key": record.key,
                "duration_seconds": record.duration_seconds,
                **({"storage": [entry.model_dump() for entry in record.storage]} if record.storage else {}),
            },
        )
    return RunNotice(
        source="backup",
        target=record.target,
        severity="critical",
        status="failed",
        run_id=run_id,
        summary=f"backup {record.backup_id} failed: {record.error}",
        details={"backup_id": record.backup_id, "error": record.error},
    )


def backup_target(runtime: Runtime, target_name: str) -> BackupRecord:
    """Back up one target, record the result, and notify. A failed dump is a `failed` record.

    Raises RunInProgress when another backup of the target holds its lock, and CatalogError /
    CatalogWriteFailed when the record cannot be written: a scheduled run (jobs.runner)
    contains and alerts those."""
    record = BackupRun(runtime, target_name).execute()
    # copy mode: the replica copy right after the backup; a failed copy never fails it.
    record = replicate_backup(runtime, record)
    record = write_storage_manifests(runtime, record)
    if runtime.notifier is not None:
        failing = ["backup"] if record.status == "failed" else []
        runtime.notifier.send(notice_for(record, runtime.run_id), failing_checks=failing)
    return record


class BackupSummary(BackupRecord):
    """A backup record in a run's result. The result is also the idempotency record (a DynamoDB
    item, 400 KB at most): per-table row counts stay in the catalog and the manifest."""

    tables: dict[str, int] = Field(default_factory=dict, exclude=True)
    table_count: int = 0

    @classmethod
    def of(cls, record: BackupRecord) -> BackupSummary:
        return cls(**record.model_dump(exclude={"tables"}), table_count=len(record.tables))


class BackupRunResult(RunResult[BackupSummary]):
    records_key: ClassVar[str] = "backups"

    def document(self) -> dict[str, Any]:
        # `errors`, as scripts read it before `not_run` said the same for every job.
        errors = [{"target": outcome.target, "error": outcome.reason} for outcome in self.not_run]
        return {**super().document(), "errors": errors}


def run_scheduled_backup(runtime: Runtime, scheduled: ScheduledEvent) -> BackupRunResult:
    """The backup function's whole job for one scheduled event (Lambda and CLI alike)."""
    return run_for_targets(
        runtime,
        "backup",
        scheduled,
        lambda target: [BackupSummary.of(backup_target(runtime, target.name))],
        result_type=BackupRunResult,
    )
