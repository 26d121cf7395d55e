"""The run of one backup of one target: take the target's lock, dump, and record the outcome
(catalog record, manifest beside the dump, metrics). A failed dump is a `failed` record."""

from __future__ import annotations

from typing import Any

from drsentry.adapters.secrets import sanitize
from drsentry.core import gfs, observability
from drsentry.core.errors import CatalogError, CatalogWriteFailed, DrsentryError, Interrupted
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, ClusterGlobals, Tier, iso, new_backup_id
from drsentry.jobs.backup.dump import DatabaseDump, DumpOutcome, Watchdog
from drsentry.jobs.backup.globals import store_globals
from drsentry.jobs.backup.rules import (
    COMPRESSION,
    backup_manifest,
    backup_metrics,
    globals_key,
    notice_for,
    object_keys,
    objects_prefix,
)
from drsentry.jobs.runtime import Runtime

# Outside Lambda a run has no deadline; a crashed one's lock expires after this.
LOCK_TTL_SECONDS = 3 * 3600


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
        self.globals_key = globals_key(self.config.storage.prefix, self.target.name, self.backup_id)
        self.bucket = runtime.buckets.bucket(self.config.storage.bucket)
        self._dsn = ""
        self._watchdog = Watchdog(runtime.remaining_seconds)
        # Set once the completed record is in the catalog: from then on the objects are the backup.
        self._recorded: BackupRecord | None = None

    def _lock_ttl(self) -> int:
        remaining = self._watchdog.time_left()
        # In Lambda the run cannot outlive its invocation: the lock need not either.
        return LOCK_TTL_SECONDS if remaining is None else int(remaining) + 60

    def execute(self) -> BackupRecord:
        catalog = self.runtime.catalog
        catalog.locks.acquire(self.target.name, self.runtime.run_id, self._lock_ttl(), job="backup")
        try:
            with self._watchdog.watching():
                try:
                    outcome = self._dump()
                except (DrsentryError, OSError) as exc:
                    return self._record_failure(self._failure_reason(exc) + self._removal_note())
                return self._record_success(outcome)
        except KeyboardInterrupt as exc:
            raise self._interrupted(exc) from exc
        finally:
            catalog.locks.release(self.target.name, self.runtime.run_id, job="backup")

    def _interrupted(self, exc: KeyboardInterrupt) -> Interrupted:
        """Ctrl-C or SIGTERM: pg_dump is stopped and the upload aborted on the way up (dump.py);
        here, whatever was already stored goes, a `failed` record says so and a notice is sent,
        so that no object is left that no record shows. The lock is released by the caller."""
        signal_name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
        what = f"backup {self.backup_id} of {self.target.name}"
        if self._recorded is not None:
            return Interrupted.of(exc, f"{what} was completed and recorded before {signal_name} arrived")
        try:
            self._remove_stored()
            cleaned = "pg_dump stopped, upload aborted, no object left"
        except DrsentryError as cleanup_error:
            cleaned = f"pg_dump stopped, upload aborted; removing what was stored failed: {cleanup_error}"
        try:
            record = self._record_failure(f"interrupted by {signal_name}: {cleaned}")
            if self.runtime.notifier is not None:
                self.runtime.notifier.send(notice_for(record, self.runtime.run_id), failing_checks=["backup"])
        except DrsentryError as record_error:
            return Interrupted.of(
                exc, f"{what} interrupted by {signal_name}: {cleaned}; not recorded: {record_error}"
            )
        return Interrupted.of(exc, f"{what} interrupted by {signal_name}: {cleaned}; recorded as failed")

    def _remove_stored(self) -> int:
        """Delete every version of every object this backup stored; how many there were. A
        `failed` record never stands beside a stored dump (a dump may fail after its upload
        completed: tags, roles object, manifest, the snapshot session)."""
        prefix = objects_prefix(self.config.storage.prefix, self.target.name, self.backup_id)
        versions = [(entry.key, entry.version_id) for entry in self.bucket.iter_versions(prefix)]
        if versions:
            self.bucket.delete_versions(versions)
        return len(versions)

    def _removal_note(self) -> str:
        """What the failed record adds about the objects this backup had stored, if any."""
        try:
            removed = self._remove_stored()
        except DrsentryError as exc:
            return f"; removing the stored objects failed: {exc}"
        return "; stored objects removed" if removed else ""

    def _failure_reason(self, exc: DrsentryError | OSError) -> str:
        # Whatever broke after the watchdog fired broke because it fired: the timeout is the cause.
        if self._watchdog.timed_out.is_set():
            return self._watchdog.timeout_message()
        if isinstance(exc, DrsentryError):
            return str(exc)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first_line}"

    def _dump(self) -> DumpOutcome:
        self._dsn = self.runtime.credentials.dsn(dsn=self.target.dsn, secret_name=self.target.dsn_secret)
        dump = DatabaseDump(
            target=self.target.name,
            backup_id=self.backup_id,
            bucket=self.bucket,
            key=self.key,
            compression_level=self.config.storage.compression_level,
            pg_bin_dir=self.config.pg_bin_dir,
            watchdog=self._watchdog,
            progress=self.runtime.progress,
        )
        return dump.run(self._dsn)

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

    def _tier(self) -> Tier | None:
        try:
            previous = self.runtime.catalog.latest_completed(self.target.name)
        except CatalogError as exc:
            # The manifest is still written, so `drsentry catalog rebuild` can restore the
            # record and its tier once the catalog answers again.
            logger.error("catalog unreadable while recording a backup", extra={"error": str(exc)})
            return None
        return gfs.assign_tier(self.started, previous.started if previous else None)

    def _store_globals(self, outcome: DumpOutcome) -> ClusterGlobals:
        stored = store_globals(
            self.bucket, self.globals_key, outcome.globals, backup_id=self.backup_id, target=self.target.name
        )
        return ClusterGlobals(
            key=stored.key,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            role_passwords=outcome.globals.role_passwords,
            roles=outcome.facts.roles,
        )

    def _record_success(self, outcome: DumpOutcome) -> BackupRecord:
        facts = outcome.facts
        try:
            cluster_globals = self._store_globals(outcome)
        except DrsentryError as exc:
            self.bucket.delete_all_versions(self.key)
            return self._record_failure(f"writing the roles object failed, backup object removed: {exc}")
        record = self._base_record(
            status="completed",
            size_bytes=outcome.stored.size_bytes,
            sha256=outcome.stored.sha256,
            storage_class="STANDARD",
            tier=self._tier(),
            pg_server_version=facts.server_version,
            pg_dump_version=outcome.pg_dump.version,
            database_size_bytes=facts.database_size_bytes,
            compression=COMPRESSION,
            schema_fingerprint=facts.schema_fingerprint,
            tables=facts.tables,
            replica="pending" if self.config.storage.replica else None,
            globals=cluster_globals,
        )
        try:
            self.bucket.put_json(self.manifest_key, backup_manifest(record, facts))
        except DrsentryError as exc:
            self.bucket.delete_all_versions(self.key)
            self.bucket.delete_all_versions(self.globals_key)
            return self._record_failure(
                f"writing the manifest failed, backup and roles objects removed: {exc}"
            )
        try:
            self.runtime.catalog.put_backup(record)
        except CatalogError as exc:
            self._emit_metrics(record.model_copy(update={"status": "failed"}))
            raise CatalogWriteFailed(
                f"backup {record.backup_id} is stored at s3://{record.bucket}/{record.key} but its catalog "
                f"record could not be written ({exc}); recover it with "
                f"`drsentry catalog rebuild --target {record.target}`"
            ) from exc
        self._recorded = record
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
        # Only a failed backup asks the catalog for the newest completed one's age.
        newest_age = self._newest_completed_age() if record.status != "completed" else None
        for name, unit, value in backup_metrics(record, newest_age):
            observability.put_metric(name, unit, value, record.target)
