"""The run of one backup of one target: take the target's lock, dump, and record the outcome
(catalog record, manifest beside the dump, metrics). A failed dump is a `failed` record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from drsentry.adapters.secrets import sanitize
from drsentry.core import gfs, observability
from drsentry.core.errors import CatalogError, CatalogWriteFailed, DrsentryError, Interrupted
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, ClusterGlobals, Tier, iso, new_backup_id
from drsentry.jobs.backup.databases import (
    DumpedDatabase,
    database_keys,
    databases_to_back_up,
    dump_databases,
    referenced_roles,
    several_databases_fields,
    write_database_manifests,
)
from drsentry.jobs.backup.dump import DatabaseDump, Watchdog
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
from drsentry.jobs.object_lock import backup_keys, lock_objects
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
        # The dumps of a target of several databases, known once they are listed.
        self._database_keys: list[str] = []
        self._watchdog = Watchdog(runtime.remaining_seconds)
        # Set once the completed record is in the catalog: from then on the objects are the backup.
        self._recorded: BackupRecord | None = None
        # The GFS periods this backup is the first completed backup of (known with its tier).
        self._first_of: tuple[Tier, ...] = ()

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
        """Withdraw every object this backup stored (a delete marker on each: no reader sees it);
        how many there were. A `failed` record never stands beside a visible dump (a dump may fail
        after its upload completed: tags, roles object, manifest, the snapshot session). The
        backup role may not destroy a version; the next archive run purges them (jobs/archive/purge.py)."""
        prefix = objects_prefix(self.config.storage.prefix, self.target.name, self.backup_id)
        keys = [entry.key for entry in self.bucket.iter_objects(prefix)]
        if keys:
            self.bucket.hide(keys)
        return len(keys)

    def _removal_note(self) -> str:
        """What the failed record adds about the objects this backup had stored, if any."""
        try:
            removed = self._remove_stored()
        except DrsentryError as exc:
            return f"; removing the stored objects failed: {exc}"
        return "; stored objects withdrawn" if removed else ""

    def _failure_reason(self, exc: DrsentryError | OSError) -> str:
        # Whatever broke after the watchdog fired broke because it fired: the timeout is the cause.
        if self._watchdog.timed_out.is_set():
            return self._watchdog.timeout_message()
        if isinstance(exc, DrsentryError):
            return str(exc)
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return f"{type(exc).__name__}: {first_line}"

    def _dump(self) -> list[DumpedDatabase]:
        """The DSN's database, or each database of a target of several (`jobs.backup.databases`)."""
        self._dsn = self.runtime.credentials.target_dsn(self.target)
        if self.target.databases is None:
            outcome = self._database_dump(self.key, True).run(self._dsn)
            return [DumpedDatabase(None, self.key, self.manifest_key, outcome)]
        return dump_databases(
            self.bucket,
            databases_to_back_up(self.target, self._dsn),
            database_keys(self.config.storage.prefix, self.target.name, self.backup_id),
            self._dsn,
            make_dump=self._database_dump,
            on_planned=self._database_keys.append,
        )

    def _database_dump(self, key: str, capture_roles: bool) -> DatabaseDump:
        return DatabaseDump(
            target=self.target.name,
            backup_id=self.backup_id,
            bucket=self.bucket,
            key=key,
            compression_level=self.config.storage.compression_level,
            pg_bin_dir=self.config.pg_bin_dir,
            watchdog=self._watchdog,
            progress=self.runtime.progress,
            capture_roles=capture_roles,
        )

    # the record ----------------------------------------------------------------

    def _base_record(self, **fields: Any) -> BackupRecord:
        finished = self.runtime.clock()
        return BackupRecord(
            **{
                "target": self.target.name,
                "backup_id": self.backup_id,
                "started_at": iso(self.started),
                "finished_at": iso(finished),
                "duration_seconds": round((finished - self.started).total_seconds(), 3),
                "bucket": self.config.storage.bucket,
                "key": self.key,
                "manifest_key": self.manifest_key,
                "run_id": self.runtime.run_id,
                "runner": self.runtime.runner,
                **fields,
            }
        )

    def _tier(self) -> Tier | None:
        try:
            previous = self.runtime.catalog.latest_completed(self.target.name)
        except CatalogError as exc:
            # The manifest is still written, so `drsentry catalog rebuild` can restore the
            # record and its tier once the catalog answers again.
            logger.error("catalog unreadable while recording a backup", extra={"error": str(exc)})
            return None
        self._first_of = gfs.first_of(self.started, previous.started if previous else None)
        return gfs.assign_tier(self.started, previous.started if previous else None)

    def _retain_until(self) -> datetime:
        """The end of the longest slot the primary copy serves (the archive copy serves the monthly
        one when archiving is on); with the catalog unreadable, the hour's: an archive run extends it."""
        return gfs.primary_retain_until(
            self.started,
            self._first_of,
            self.config.retention,
            archive_enabled=self.config.storage.archive is not None,
        )

    def _store_globals(self, dumped: list[DumpedDatabase]) -> ClusterGlobals:
        captured = dumped[0].outcome.globals
        assert captured is not None, "the first database's dump captures the roles"
        stored = store_globals(
            self.bucket, self.globals_key, captured, backup_id=self.backup_id, target=self.target.name
        )
        return ClusterGlobals(
            key=stored.key,
            sha256=stored.sha256,
            size_bytes=stored.size_bytes,
            role_passwords=captured.role_passwords,
            roles=referenced_roles(dumped),
        )

    def _dump_fields(self, dumped: list[DumpedDatabase]) -> dict[str, Any]:
        if self.target.databases is not None:
            return several_databases_fields(dumped)
        outcome = dumped[0].outcome
        return {
            "size_bytes": outcome.stored.size_bytes,
            "sha256": outcome.stored.sha256,
            "pg_server_version": outcome.facts.server_version,
            "pg_dump_version": outcome.pg_dump.version,
            "database_size_bytes": outcome.facts.database_size_bytes,
            "schema_fingerprint": outcome.facts.schema_fingerprint,
            "tables": outcome.facts.tables,
        }

    def _record_success(self, dumped: list[DumpedDatabase]) -> BackupRecord:
        try:
            cluster_globals = self._store_globals(dumped)
        except DrsentryError as exc:
            self._remove_stored()
            return self._record_failure(f"writing the roles object failed, backup object withdrawn: {exc}")
        tier = self._tier()
        retain_until = self._retain_until()
        record = self._base_record(
            status="completed",
            storage_class="STANDARD",
            tier=tier,
            retain_until=iso(retain_until),
            lock_mode=self.config.storage.lock_mode,
            compression=COMPRESSION,
            replica="pending" if self.config.storage.replica else None,
            globals=cluster_globals,
            **self._dump_fields(dumped),
        )
        try:
            if record.databases:
                write_database_manifests(self.bucket, record, dumped)
            facts = None if record.databases else dumped[0].outcome.facts
            self.bucket.put_json(self.manifest_key, backup_manifest(record, facts))
        except DrsentryError as exc:
            self._remove_stored()
            return self._record_failure(
                f"writing the manifest failed, backup and roles objects withdrawn: {exc}"
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
        try:
            # Locked once recorded: until then a stop (a signal, a failed write) removes every
            # object, which a lock would forbid. A backup that cannot be locked is not completed:
            # its record is rewritten as failed.
            lock_objects(
                self.bucket, backup_keys(record), mode=self.config.storage.lock_mode, until=retain_until
            )
        except DrsentryError as exc:
            return self._record_failure(f"locking the backup failed: {exc}{self._removal_note()}")
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
