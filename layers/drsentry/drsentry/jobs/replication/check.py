"""The replication check of one target (``check_replication``, hourly through its Lambda).

It reads the completed backups of the last ``WINDOW`` (7 days; shorter when the oldest
kept backup is younger) with one paginated key-range query, lists the replica bucket's
folders those backups live in (a LIST page per 1,000 objects), and judges each backup:

- Fast path: a replica already verified identical whose size, ETag and last-modified time
  are unchanged in the listing (and whose manifest is listed) is still identical: nothing
  can change an object's bytes without changing those. In the steady state that is every
  backup but the newest, so 10,000 backups cost a few LIST requests instead of 10,000 HEADs.
- Otherwise HEADs, concurrently in a bounded pool (``HEAD_CONCURRENCY``), judged by
  ``rules.judge_backup``.

It also checks the buckets' settings (``rules``: versioning, the replication rule in crr
mode, the regions really differing).

Results: one record per check and target in the catalog table (``replication_checks``,
kept 90 days), the metrics ``ReplicaMissing`` (absent or FAILED replicas),
``ReplicaMismatch`` and ``ReplicationLagSeconds`` (age of the oldest backup not yet safely
replicated), the replica state of each backup record whose state changed, and one notice
on the alerts route.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from drsentry.adapters.buckets import Bucket, ObjectHead
from drsentry.core.config import ReplicaConfig
from drsentry.core.errors import BackupNotFound, BadInput, BucketNotFound, CatalogError, StorageError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, iso, parse_iso
from drsentry.jobs.replication.objects import establish_sha256, facts_of, small_object_facts
from drsentry.jobs.replication.report import (
    BackupCheck,
    ReplicationReport,
    emit_metrics,
    listed_ids,
    notice_for,
    summarize,
)
from drsentry.jobs.replication.rules import (
    SEEN_STATES,
    Fingerprint,
    ListedObject,
    ObjectFacts,
    Problem,
    Verdict,
    fingerprint_of,
    judge_backup,
    judge_globals,
    object_facts,
    overall_status,
    region_problems,
    replica_changed,
    replica_detail,
    replication_rule_problems,
    still_verified,
    verified_fingerprint,
    versioning_problem,
)

if TYPE_CHECKING:
    from drsentry.jobs.runtime import Runtime

WINDOW = timedelta(days=7)
HEAD_CONCURRENCY = 16
# Stop waiting for HEADs this long before Lambda's hard limit, so the record is still written.
CHECK_TIME_MARGIN_SECONDS = 30.0

# What the check reads of a backup record (and of its replica_detail map): the listing
# stays small even when records carry row counts for hundreds of tables.
_WINDOW_FIELDS = (
    "backup_id",
    "started_at",
    "finished_at",
    "size_bytes",
    "sha256",
    "bucket",
    "key",
    "manifest_key",
    "replica",
    "globals",
)
_WINDOW_DETAIL_FIELDS = ("etag", "last_modified", "error")


def backups_in_window(runtime: Runtime, target: str, window_start: datetime) -> list[BackupRecord]:
    """Completed backups started at or after `window_start`, newest first, page by page.

    Backup ids begin with their start time, so the window is one key range of the
    catalog: the query reads the window only, and only the fields the check needs.
    """
    return runtime.catalog.replication_checks.backups_in_window(
        target, window_start, _WINDOW_FIELDS, _WINDOW_DETAIL_FIELDS
    )


def _directory(key: str) -> str:
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


class ReplicaInventory:
    """The replica bucket's objects under the folders the window's backups live in.

    A few paginated LIST requests (one folder per day) replace a HEAD per backup: a
    replica already verified identical and unchanged since (same size, ETag and
    last-modified time) needs nothing more. A folder whose listing failed is not
    covered, and its backups are HEADed instead.
    """

    def __init__(self) -> None:
        self.folders: set[str] = set()
        self.objects: dict[str, ListedObject] = {}

    def covers(self, key: str) -> bool:
        return _directory(key) in self.folders

    def get(self, key: str) -> ListedObject | None:
        return self.objects.get(key)

    def add_folder(self, bucket: Bucket, folder: str) -> None:
        found: dict[str, ListedObject] = {}
        try:
            for entry in bucket.iter_objects(folder):
                found[entry.key] = ListedObject(
                    size_bytes=entry.size_bytes, fingerprint=fingerprint_of(entry.etag, entry.last_modified)
                )
        except StorageError as exc:
            logger.warning(
                "listing the replica failed; its backups are checked one by one",
                extra={"bucket": bucket.name, "prefix": folder, "error": str(exc)},
            )
            return
        self.objects.update(found)
        self.folders.add(folder)


class _ReplicaInspector:
    """Judges one backup: from the inventory when that suffices, else with HEADs (and a
    read when the SHA-256 is in doubt); records a changed state. Runs in the check's pool."""

    def __init__(
        self, runtime: Runtime, replica: ReplicaConfig, now: datetime, inventory: ReplicaInventory
    ) -> None:
        self.runtime = runtime
        self.replica = replica
        self.now = now
        self.inventory = inventory
        self.checked_at = iso(now)
        self.replica_bucket = runtime.buckets.bucket(replica.bucket, replica.region)

    def inspect(self, record: BackupRecord) -> BackupCheck:
        age = max((self.now - parse_iso(record.finished_at or record.started_at)).total_seconds(), 0.0)
        verified = verified_fingerprint(record.replica, record.replica_detail)
        if record.databases:
            return self._inspect_databases(record, age, verified)
        manifest_listed = self.inventory.get(record.manifest_key) is not None and self._globals_listed(record)
        if still_verified(self.inventory.get(record.key), manifest_listed, record.size_bytes, verified):
            return BackupCheck(
                record.backup_id, Verdict("ok", "ok", "replica unchanged since verified"), None, age
            )
        try:
            verdict, replica = self._judge(record, age, verified)
        except StorageError as exc:
            return BackupCheck(record.backup_id, None, str(exc), age)
        self._record_state(record, verdict, replica)
        return BackupCheck(record.backup_id, verdict, None, age)

    def _inspect_databases(
        self, record: BackupRecord, age: float, verified: Fingerprint | None
    ) -> BackupCheck:
        """A backup of several databases: each database's dump judged as a single backup's is (the
        verified fingerprint is the first database's); the backup's state is the first that is
        not ok, naming its database."""
        judged: list[tuple[str, Verdict, ObjectFacts]] = []
        try:
            for index, view in enumerate(record.database_views()):
                verdict, replica = self._judge(view, age, verified if index == 0 else None)
                judged.append((record.database_names[index], verdict, replica))
        except StorageError as exc:
            return BackupCheck(record.backup_id, None, str(exc), age)
        verdict = judged[0][1]
        for database, database_verdict, _replica in judged:
            if database_verdict.state != "ok":
                verdict = replace(database_verdict, reason=f"database {database}: {database_verdict.reason}")
                break
        self._record_state(record, verdict, judged[0][2])
        return BackupCheck(record.backup_id, verdict, None, age)

    def _globals_listed(self, record: BackupRecord) -> bool:
        """The roles object is listed with its recorded size (or the backup has none)."""
        if record.globals is None:
            return True
        listed = self.inventory.get(record.globals.key)
        return listed is not None and listed.size_bytes == record.globals.size_bytes

    def _replica_head(self, key: str) -> ObjectHead | None:
        if self.inventory.covers(key) and self.inventory.get(key) is None:
            return None  # the listing is strongly consistent: absent means absent
        return self.replica_bucket.head(key)

    def _source_facts(self, record: BackupRecord) -> ObjectFacts:
        source = self.runtime.buckets.bucket(record.bucket, self.runtime.config.storage.region)
        return object_facts(source.head(record.key))

    def _judge(
        self, record: BackupRecord, age: float, verified: Fingerprint | None
    ) -> tuple[Verdict, ObjectFacts]:
        mode = self.replica.mode
        source = self._source_facts(record) if mode == "crr" else None
        replica = facts_of(self.replica_bucket, record.key, self._replica_head(record.key))
        replica = establish_sha256(
            self.replica_bucket,
            record.key,
            replica,
            expected_size=record.size_bytes,
            changed=replica_changed(replica, verified, source),
        )
        manifest_present: bool | None = None
        if replica.exists:
            manifest_present = self._replica_head(record.manifest_key) is not None
        detail = record.replica_detail
        copy_error = detail.error if record.replica == "failed" and detail is not None else None
        verdict = judge_backup(
            mode=mode,
            expected_size=record.size_bytes,
            expected_sha256=record.sha256,
            replica=replica,
            source=source,
            manifest_present=manifest_present,
            age_seconds=age,
            max_lag_seconds=self.replica.max_lag.total_seconds(),
            copy_error=copy_error,
            # "missing" stays missing: it was seen and gone, or it is past max_lag anyway.
            seen_before=record.replica in SEEN_STATES,
        )
        if verdict.state == "ok" and record.globals is not None:
            globals_key = record.globals.key
            globals_head = self._replica_head(globals_key)
            replica_globals = small_object_facts(self.replica_bucket, globals_key, globals_head)
            verdict = judge_globals(record.globals, replica_globals) or verdict
        return verdict, replica

    def _record_state(self, record: BackupRecord, verdict: Verdict, replica: ObjectFacts) -> None:
        verified = replica if verdict.state == "ok" else None
        new_fingerprint = verified.fingerprint if verified is not None else None
        old_fingerprint = verified_fingerprint(record.replica, record.replica_detail)
        if verdict.state == record.replica and new_fingerprint == old_fingerprint:
            return
        error = None if verdict.state == "ok" else verdict.reason
        detail = replica_detail(self.replica, self.checked_at, error, verified)
        try:
            self.runtime.catalog.update_backup(
                record.target,
                record.backup_id,
                {"replica": verdict.state, "replica_detail": detail.model_dump()},
            )
        except (CatalogError, BackupNotFound) as exc:
            # The check's own record still holds the finding; the next check retries the update.
            logger.warning(
                "updating the replica state failed", extra={"backup_id": record.backup_id, "error": str(exc)}
            )


def _bucket_problems(runtime: Runtime, replica: ReplicaConfig) -> list[Problem]:
    storage = runtime.config.storage
    primary = runtime.buckets.bucket(storage.bucket, storage.region)
    replica_bucket = runtime.buckets.bucket(replica.bucket, replica.region)
    problems: list[Problem] = []
    locations: dict[str, str | None] = {}
    for role, bucket in (("primary", primary), ("replica", replica_bucket)):
        try:
            locations[role] = bucket.location()
            status = bucket.versioning()
        except StorageError as exc:
            locations[role] = None
            problems.append(
                Problem(
                    check=f"{role}-bucket",
                    severity="critical",
                    detail=(
                        f"the {role} bucket {bucket.name} does not exist"
                        if isinstance(exc, BucketNotFound)
                        else f"cannot read the settings of the {role} bucket: {exc}"
                    ),
                )
            )
            continue
        problem = versioning_problem(role, bucket.name, status, replica.mode)
        if problem is not None:
            problems.append(problem)
    problems.extend(
        region_problems(storage.region, replica.region, locations.get("primary"), locations.get("replica"))
    )
    if replica.mode == "crr":
        problems.extend(_replication_config_problems(primary, replica.bucket, storage.prefix))
    return problems


def _replication_config_problems(primary: Bucket, replica_bucket: str, prefix: str) -> list[Problem]:
    try:
        rules = primary.replication_rules()
    except StorageError as exc:
        return [
            Problem(
                check="replication-config",
                severity="critical",
                detail=str(exc),  # names the bucket and what S3 answered
            )
        ]
    return replication_rule_problems(rules, primary.name, replica_bucket, prefix)


def _inspect_all(
    runtime: Runtime, replica: ReplicaConfig, backups: list[BackupRecord], now: datetime
) -> tuple[list[BackupCheck], Problem | None]:
    """List the replica's folders, then judge every backup, HEADing with a bounded pool
    only those the listing cannot vouch for; stop in time to write the record."""
    remaining = runtime.remaining_seconds()
    deadline = (
        None if remaining is None else time.monotonic() + max(remaining - CHECK_TIME_MARGIN_SECONDS, 1.0)
    )
    inventory = ReplicaInventory()
    replica_bucket = runtime.buckets.bucket(replica.bucket, replica.region)
    folders = sorted({_directory(key) for record in backups for key in record.all_keys()})
    pool = ThreadPoolExecutor(max_workers=HEAD_CONCURRENCY, thread_name_prefix="replica-check")
    try:
        wait([pool.submit(inventory.add_folder, replica_bucket, folder) for folder in folders])
        inspector = _ReplicaInspector(runtime, replica, now, inventory)
        futures: list[Future[BackupCheck]] = [pool.submit(inspector.inspect, record) for record in backups]
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        done, not_done = wait(futures, timeout=timeout)
        # result() re-raises what a worker did not expect (a bug), never hides it.
        checks = [future.result() for future in futures if future in done]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    if not not_done:
        return checks, None
    # Out of time: what was checked is recorded; the rest is reported, not guessed.
    return checks, Problem(
        check="check-incomplete",
        severity="warning",
        detail=f"ran out of time: {len(not_done)} of {len(backups)} backup(s) were not checked",
    )


def _save(runtime: Runtime, report: ReplicationReport) -> None:
    checks = runtime.catalog.replication_checks
    checks.save(report.target, report.checked_at, report.run_id, report.model_dump())


def check_replication(runtime: Runtime, target_name: str) -> ReplicationReport:
    """Check that every completed backup of the window has an identical replica; record,
    measure and alert. Raises BadInput when no replica is configured."""
    config = runtime.config
    replica = config.storage.replica
    if replica is None:
        raise BadInput("storage.replica is not configured: there is no replica to check")
    target = config.target(target_name).name
    started = time.monotonic()
    now = runtime.clock()
    window_start = now - WINDOW
    backups = backups_in_window(runtime, target, window_start)
    bucket_problems = _bucket_problems(runtime, replica)
    checks, incomplete = _inspect_all(runtime, replica, backups, now)
    groups, problems, lag, oldest = summarize(checks, bucket_problems, replica)
    if incomplete is not None:
        problems.append(incomplete)
    report = ReplicationReport(
        target=target,
        checked_at=iso(now),
        run_id=runtime.run_id,
        status=overall_status([problem.severity for problem in problems]),
        mode=replica.mode,
        primary_bucket=config.storage.bucket,
        replica_bucket=replica.bucket,
        replica_region=replica.region,
        window_start=iso(window_start),
        checked=len(checks),
        counts={name: len(found) for name, found in groups.items()},
        missing=listed_ids(groups["missing"]),
        mismatched=listed_ids(groups["mismatched"]),
        pending=listed_ids(groups["pending"]),
        failed=listed_ids(groups["failed"]),
        unchecked=listed_ids(groups["unchecked"]),
        lag_seconds=lag,
        oldest_unreplicated=oldest,
        problems=problems,
        duration_seconds=round(time.monotonic() - started, 3),
    )
    try:
        _save(runtime, report)
    except CatalogError as exc:
        # The finding must still reach people: it goes out with the alert and in the result.
        logger.error("writing the replication check failed", extra={"target": target, "error": str(exc)})
        report.problems.append(Problem(check="check-record", severity="critical", detail=str(exc)))
        report.status = "failure"
    emit_metrics(report)
    log = logger.info if report.status == "ok" else logger.warning
    log(
        "replication check",
        extra={"target": target, "status": report.status, "counts": report.counts, "lag_seconds": lag},
    )
    if runtime.notifier is not None:
        runtime.notifier.send(notice_for(report), failing_checks=report.failing_checks)
    return report
