"""Archive: grandfather-father-son retention applied to the catalog and the buckets.

Once a day per target (the `archive` function, or `drsentry run archive`):

1. Plan with `gfs.plan_retention` from the catalog and the verification log: every
   completed backup is kept, archived (it fills a monthly slot and has no archive copy
   yet; it is kept too) or expired (it fills no slot and nothing protects it).
2. Archive: a server-side managed copy (multipart `UploadPartCopy` above the threshold,
   so objects over 5 GB copy too) of the primary version that was checked against the
   catalog, into the archive bucket in the configured storage class. The copy's size,
   storage class and SHA-256 are read back and compared with the catalog; only then is
   Object Lock retention (`lock_days`, `lock_mode`) put on that exact version and read
   back too. The manifest goes along in STANDARD, locked the same way, so the catalog can
   be read (and the record re-created by hand) without a restore. The record says `archive`
   only when all of this held.
3. Expire: every version of the dump and its manifest is deleted from the archive copy
   (if any), the replica (in both `copy` and `crr` mode) and the primary bucket, in that
   order, so the record's own location is the last to go; then the record becomes
   `expired` with the reason. Object Lock is never bypassed: a refused delete is reported
   and the record stays as it was, to be retried by the next run.
4. Metrics, one run notice per target, and a summary in the result.

`--dry-run` plans and reports without writing anything. A second run right after the
first finds nothing to do: archived backups carry `archive`, expired ones hold no slot.

Reading an archived backup: `archive_readable` says whether the archive copy can be
read now, `request_archive_restore` starts an S3 restore for GLACIER / DEEP_ARCHIVE and
records it as pending, and `ensure_archive_readable` turns "not yet" into one clear
message instead of S3's raw `InvalidObjectState`.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from drsentry.adapters.buckets import SHA256_TAG, Bucket, CopyParts, MiB, ObjectHead
from drsentry.core import gfs, observability
from drsentry.core.config import ArchiveConfig
from drsentry.core.errors import (
    BadInput,
    DeleteRefused,
    DrsentryError,
    ObjectArchived,
    RestoreInProgress,
    StorageError,
)
from drsentry.core.events import ScheduledEvent
from drsentry.core.gfs import RetentionDecision, RetentionPlan, is_archived
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, ReplicaDetail, RunNotice, iso
from drsentry.jobs.runner import RunResult, run_for_targets
from drsentry.jobs.runtime import Runtime

# Copies up to this size are one CopyObject; larger ones are parallel UploadPartCopy
# parts (s3transfer grows the part size so even a 5 TB object stays under 10,000 parts).
COPY_PARTS = CopyParts(threshold=256 * MiB, part_size=256 * MiB, concurrency=8)
# Stop this long before Lambda's hard limit; what is left waits for the next run.
TIME_MARGIN_SECONDS = 60.0
# A real run's result is also the idempotency record (one DynamoDB item, 400 KB at most),
# so it lists at most this many rows: the changes first, then kept backups while room is left.
MAX_RESULT_ROWS = 500
EXPIRE_CONCURRENCY = 8
READABLE_CLASSES = frozenset({"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"})
RESTORE_TIMES: dict[str, dict[str, str]] = {
    "DEEP_ARCHIVE": {"Standard": "up to 12 h", "Bulk": "up to 48 h"},
    "GLACIER": {"Expedited": "1-5 minutes", "Standard": "3-5 h", "Bulk": "5-12 h"},
}
DEFAULT_RESTORE_DAYS = 7

Outcome = Literal["planned", "done", "failed", "refused", "deferred"]
RestoreTier = Literal["Standard", "Bulk", "Expedited"]
ArchiveState = Literal["readable", "pending", "archived"]


class ArchiveFailed(DrsentryError):
    """A copy to the archive bucket failed or did not match the catalog."""


class ArchiveNotReadable(DrsentryError):
    """The backup lives only in an archive storage class and is not restored (yet)."""


# the report ------------------------------------------------------------------------


class DecisionRow(BaseModel):
    """One line of the plan table: what retention decided for a backup, and what came of it."""

    backup_id: str
    started_at: str
    action: gfs.Action
    slots: list[str] = Field(default_factory=list)
    reason: str = ""
    # None for `keep`; `planned` in a dry run.
    outcome: Outcome | None = None
    detail: str | None = None


class TargetArchiveReport(BaseModel):
    target: str
    dry_run: bool
    planned_at: str
    # keep / archive / expire / ignored (failed and already expired records)
    counts: dict[str, int] = Field(default_factory=dict)
    # filled slots per tier: hourly / daily / weekly / monthly
    slots: dict[str, int] = Field(default_factory=dict)
    archived: int = 0
    expired: int = 0
    failed: int = 0
    refused: int = 0
    deferred: int = 0
    # Newest first: every change (archive, expire) and, space permitting, the kept backups.
    decisions: list[DecisionRow] = Field(default_factory=list)
    decisions_omitted: int = 0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.refused == 0

    def summary(self) -> str:
        counts = self.counts
        planned = (
            f"keep {counts.get('keep', 0)}, archive {counts.get('archive', 0)}, "
            f"expire {counts.get('expire', 0)}"
        )
        if self.dry_run:
            return f"dry run for {self.target}: {planned}; nothing changed"
        done = f"archived {self.archived}, expired {self.expired}"
        problems = [
            f"{count} {label}"
            for count, label in (
                (self.failed, "failed"),
                (self.refused, "refused by Object Lock"),
                (self.deferred, "left for the next run"),
            )
            if count
        ]
        return f"{self.target}: {planned}: {done}" + (f"; {', '.join(problems)}" if problems else "")


# one target ------------------------------------------------------------------------


class ArchiveRun:
    """Plan and apply retention for one target."""

    def __init__(self, runtime: Runtime, target_name: str, *, dry_run: bool = False) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.target = runtime.config.target(target_name)
        self.dry_run = dry_run
        self.now = runtime.clock()
        # The primary and the archive bucket: both in the primary region.
        self.buckets = runtime.buckets

    def plan(self) -> tuple[RetentionPlan, dict[str, BackupRecord]]:
        records = {record.backup_id: record for record in self.runtime.catalog.iter_backups(self.target.name)}
        verified = {
            verification.backup_id
            for verification in self.runtime.catalog.verifications.iter(self.target.name)
            if verification.status == "success"
        }
        plan = gfs.plan_retention(
            list(records.values()),
            now=self.now,
            retention=self.config.retention,
            rpo=self.config.rpo,
            verified_success=verified,
            archive_enabled=self.config.storage.archive is not None,
        )
        return plan, records

    def execute(self) -> TargetArchiveReport:
        plan, records = self.plan()
        report = TargetArchiveReport(
            target=self.target.name,
            dry_run=self.dry_run,
            planned_at=plan.planned_at,
            counts=plan.counts,
            slots=dict(plan.slot_counts()),
        )
        rows = {decision.backup_id: _row(decision) for decision in plan.decisions}
        if self.dry_run:
            for row in rows.values():
                if row.action != "keep":
                    row.outcome = "planned"
        else:
            # Copies first, one at a time (each is already a parallel multipart copy): a
            # month's archive copy matters more than reclaiming space.
            for decision in plan.with_action("archive"):
                self._apply(rows[decision.backup_id], partial(self._archive, records[decision.backup_id]))
            # Expiries are a few small requests each; a first run over a large old catalog
            # has thousands, so they run side by side, oldest first: should the run be cut
            # short, the oldest garbage is gone already.
            with ThreadPoolExecutor(max_workers=EXPIRE_CONCURRENCY, thread_name_prefix="expire") as pool:
                expiries = [
                    pool.submit(
                        self._apply,
                        rows[decision.backup_id],
                        partial(self._expire, records[decision.backup_id], decision.reason),
                    )
                    for decision in reversed(plan.with_action("expire"))
                ]
            for expiry in expiries:
                expiry.result()  # an unexpected error surfaces here instead of vanishing in a thread
        outcomes = [(row.action, row.outcome) for row in rows.values()]
        report.archived = outcomes.count(("archive", "done"))
        report.expired = outcomes.count(("expire", "done"))
        report.failed = sum(outcome == "failed" for _, outcome in outcomes)
        report.refused = sum(outcome == "refused" for _, outcome in outcomes)
        report.deferred = sum(outcome == "deferred" for _, outcome in outcomes)
        report.decisions, report.decisions_omitted = _result_rows(list(rows.values()), self.dry_run)
        return report

    def _apply(self, row: DecisionRow, action: Callable[[], str]) -> None:
        """Run one action and record its outcome on its row (each row has one writer)."""
        context = {"target": self.target.name, "backup_id": row.backup_id}
        remaining = self.runtime.remaining_seconds()
        if remaining is not None and remaining < TIME_MARGIN_SECONDS:
            row.outcome, row.detail = "deferred", f"{remaining:.0f}s of run time left; next run"
            return
        try:
            row.detail = action()
        except DeleteRefused as exc:
            row.outcome, row.detail = "refused", str(exc)
            logger.warning("expiry refused", extra={**context, "error": str(exc)})
            return
        except DrsentryError as exc:
            # One backup's failure must not stop the others; it is reported and retried next run.
            row.outcome, row.detail = "failed", str(exc)
            logger.error(f"{row.action} failed", extra={**context, "error": str(exc)})
            return
        row.outcome = "done"
        logger.info(f"{row.action} done", extra={**context, "detail": row.detail})

    # archive ---------------------------------------------------------------------

    def _archive(self, record: BackupRecord) -> str:
        archive = self.config.storage.archive
        if archive is None:
            raise ArchiveFailed("no storage.archive configured")
        primary = self.buckets.bucket(record.bucket)
        archive_bucket = self.buckets.bucket(archive.bucket)
        source = primary.head(record.key)
        if source is None:
            raise ArchiveFailed(
                f"s3://{record.bucket}/{record.key}: primary copy is missing; nothing to archive"
            )
        if source.size_bytes != record.size_bytes:
            raise ArchiveFailed(
                f"s3://{record.bucket}/{record.key}: {source.size_bytes} bytes, the catalog says "
                f"{record.size_bytes}; not archiving a copy that does not match"
            )
        source_tags = primary.tags(record.key, source.version_id)
        source_sha256 = source_tags.get(SHA256_TAG)
        if source_sha256 and source_sha256 != record.sha256:
            raise ArchiveFailed(
                f"s3://{record.bucket}/{record.key}: SHA-256 tag {source_sha256} differs from "
                f"the catalog's {record.sha256}; not archiving"
            )
        retain_until = (self.now + timedelta(days=archive.lock_days)).replace(microsecond=0)
        lock = bool(archive.lock_days)
        # The source's own tags only: a SHA-256 made up here would prove nothing later.
        # Exactly the version that was just checked against the catalog is copied.
        metadata = {**source.metadata, "archived-from": f"s3://{record.bucket}/{record.key}"}
        archive_bucket.copy_in(
            primary,
            source,
            storage_class=archive.storage_class,
            metadata=metadata,
            tags=source_tags,
            parts=COPY_PARTS,
        )
        copy = archive_bucket.head(record.key)
        version_id = copy.version_id if copy is not None else None
        try:
            verified_by = self._check_copy(record, archive_bucket, archive, copy, source_sha256)
        except ArchiveFailed as exc:
            raise ArchiveFailed(f"{exc}{_discard(archive_bucket, record.key, version_id)}") from exc
        if lock:
            self._lock(archive_bucket, archive, record.key, version_id, retain_until)

        # The manifest stays in STANDARD: readable without a restore, so what an archived
        # dump holds can be read from the archive bucket alone.
        manifest_source = primary.head(record.manifest_key)
        if manifest_source is None:
            raise ArchiveFailed(f"s3://{record.bucket}/{record.manifest_key}: manifest is missing")
        archive_bucket.copy_in(primary, manifest_source, storage_class="STANDARD", parts=COPY_PARTS)
        manifest_copy = archive_bucket.head(record.manifest_key)
        manifest_version = manifest_copy.version_id if manifest_copy is not None else None
        manifest = archive_bucket.get_json(record.manifest_key)
        if manifest.get("sha256") != record.sha256 or manifest.get("backup_id") != record.backup_id:
            where = f"s3://{archive.bucket}/{record.manifest_key}"
            raise ArchiveFailed(
                f"{where}: the archived manifest does not describe backup {record.backup_id}"
                + _discard(archive_bucket, record.manifest_key, manifest_version)
            )
        if lock:
            self._lock(archive_bucket, archive, record.manifest_key, manifest_version, retain_until)

        self.runtime.catalog.update_backup(
            record.target,
            record.backup_id,
            {
                "archive": {
                    "bucket": archive.bucket,
                    "key": record.key,
                    "manifest_key": record.manifest_key,
                    "storage_class": archive.storage_class,
                    "lock_mode": archive.lock_mode if lock else None,
                    "retain_until": iso(retain_until) if lock else None,
                    "sha256": record.sha256,
                    "size_bytes": record.size_bytes,
                    "version_id": version_id,
                    "verified_by": verified_by,
                    "archived_at": iso(self.runtime.clock()),
                }
            },
        )
        locked = f", locked ({archive.lock_mode}) until {iso(retain_until)}" if lock else ""
        return (
            f"s3://{archive.bucket}/{record.key} in {archive.storage_class}{locked}; SHA-256 by {verified_by}"
        )

    def _check_copy(
        self,
        record: BackupRecord,
        archive_bucket: Bucket,
        archive: ArchiveConfig,
        copy: ObjectHead | None,
        source_sha256: str | None,
    ) -> str:
        """The archive copy's size and class against the catalog, and its SHA-256: the tag of
        the exact source version copied server-side (already matched to the catalog), or,
        without one, read from the copy. Returns how the hash was checked."""
        where = f"s3://{archive.bucket}/{record.key}"
        if copy is None:
            raise ArchiveFailed(f"{where}: not there after the copy")
        if copy.size_bytes != record.size_bytes:
            raise ArchiveFailed(
                f"{where}: {copy.size_bytes} bytes after the copy, the catalog says {record.size_bytes}"
            )
        if copy.storage_class != archive.storage_class:
            raise ArchiveFailed(f"{where}: stored as {copy.storage_class}, not {archive.storage_class}")
        if source_sha256 == record.sha256:
            return "tag"
        if copy.storage_class not in READABLE_CLASSES:
            raise ArchiveFailed(
                f"{where}: no SHA-256 tag, and {copy.storage_class} cannot be read to check it"
            )
        digest = hashlib.sha256()
        for chunk in archive_bucket.iter_chunks(record.key):
            digest.update(chunk)
        if digest.hexdigest() != record.sha256:
            raise ArchiveFailed(
                f"{where}: SHA-256 {digest.hexdigest()} differs from the catalog's {record.sha256}"
            )
        return "read"

    def _lock(
        self,
        archive_bucket: Bucket,
        archive: ArchiveConfig,
        key: str,
        version_id: str | None,
        retain_until: datetime,
    ) -> None:
        """Put Object Lock retention on the verified version, and read it back.

        The lock goes on after the check, not with the copy: in COMPLIANCE mode nobody can
        delete a locked object before its date, so a bad copy locked at once would stay,
        billed, for years. A bucket default retention that already covers the date is kept.
        """
        where = f"s3://{archive.bucket}/{key}"
        head = archive_bucket.head(key, version_id)
        if head is not None and _lock_holds(head, archive.lock_mode, retain_until):
            return
        try:
            archive_bucket.put_retention(key, version_id, mode=archive.lock_mode, until=retain_until)
        except StorageError as exc:
            raise ArchiveFailed(f"{exc} (is Object Lock enabled on the archive bucket?)") from exc
        again = archive_bucket.head(key, version_id)
        if again is None or not _lock_holds(again, archive.lock_mode, retain_until):
            raise ArchiveFailed(f"{where}: Object Lock retention until {iso(retain_until)} is not in place")

    # expire ----------------------------------------------------------------------

    def _expire(self, record: BackupRecord, reason: str) -> str:
        places: list[str] = []
        if is_archived(record) and record.archive is not None:
            _delete_versions(
                self.buckets.bucket(str(record.archive["bucket"])),
                [
                    str(record.archive.get("key") or record.key),
                    str(record.archive.get("manifest_key") or record.manifest_key),
                ],
            )
            # Recorded at once: should a later step be refused, the next run knows this copy is gone.
            self.runtime.catalog.update_backup(
                record.target,
                record.backup_id,
                {"archive": {**record.archive, "deleted_at": iso(self.runtime.clock())}},
            )
            places.append("archive")
        replica = self.config.storage.replica
        # Both modes: S3 replication never replicates deletes of specific versions, so a
        # crr replica would otherwise keep every backup (and its personal data) forever.
        if replica is not None:
            detail = record.replica_detail or ReplicaDetail()
            _delete_versions(
                self.buckets.bucket(detail.bucket or replica.bucket, detail.region or replica.region),
                # The copy and S3 replication keep the source's keys.
                [record.key, record.manifest_key],
            )
            places.append("replica")
        _delete_versions(self.buckets.bucket(record.bucket), [record.key, record.manifest_key])
        places.append("primary")
        self.runtime.catalog.update_backup(
            record.target,
            record.backup_id,
            {"status": "expired", "expired_at": iso(self.runtime.clock()), "expire_reason": reason},
        )
        return f"deleted from {', '.join(places)}"


def _delete_versions(bucket: Bucket, keys: list[str]) -> None:
    """Delete every version and delete marker of each key, the dump before its manifest.
    A version under Object Lock is refused (DeleteRefused), never forced."""
    for key in keys:
        bucket.delete_all_versions(key)


def _discard(bucket: Bucket, key: str, version_id: str | None) -> str:
    """Remove a copy that failed its check (it is not locked yet); what happened, for the message."""
    if not version_id:
        return ""
    try:
        bucket.delete_version(key, version_id)
    except StorageError as exc:
        return f"; the bad copy could not be removed: {exc}"
    return "; the bad copy was removed"


def _lock_holds(head: ObjectHead, mode: str, retain_until: datetime) -> bool:
    until = head.retain_until
    if head.retention_mode != mode or until is None:
        return False
    # Retention dates come back rounded; a second of slack never shortens a 1-day lock.
    return until.timestamp() >= retain_until.timestamp() - 1


def _row(decision: RetentionDecision) -> DecisionRow:
    return DecisionRow(
        backup_id=decision.backup_id,
        started_at=decision.started_at,
        action=decision.action,
        slots=list(decision.slots),
        reason=decision.reason,
    )


def _result_rows(rows: list[DecisionRow], dry_run: bool) -> tuple[list[DecisionRow], int]:
    """Every row for a dry run; for a real run every change and as many kept rows as fit."""
    if dry_run or len(rows) <= MAX_RESULT_ROWS:
        return rows, 0
    changes = [row for row in rows if row.action != "keep"]
    room = max(MAX_RESULT_ROWS - len(changes), 0)
    kept = [row for row in rows if row.action == "keep"][:room]
    chosen = {row.backup_id for row in changes[:MAX_RESULT_ROWS] + kept}
    shown = [row for row in rows if row.backup_id in chosen]
    return shown, len(rows) - len(shown)


# runs ------------------------------------------------------------------------------


def notice_for(report: TargetArchiveReport, run_id: str) -> tuple[RunNotice, list[str]]:
    """The run notice for one target and the checks that failed (for the alert state)."""
    failing: list[str] = []
    if report.failed:
        failing.append("archive")
    if report.refused:
        failing.append("expiry")
    severity: Literal["critical", "warning", "info"] = (
        "critical" if report.failed else "warning" if report.refused else "info"
    )
    problems = [row for row in report.decisions if row.outcome in {"failed", "refused"}]
    return (
        RunNotice(
            source="archive",
            target=report.target,
            severity=severity,
            status="completed" if report.ok else "failed",
            run_id=run_id,
            summary=report.summary(),
            details={
                "counts": report.counts,
                "slots": report.slots,
                "archived": report.archived,
                "expired": report.expired,
                "failed": report.failed,
                "refused": report.refused,
                "deferred": report.deferred,
                "problems": [
                    {
                        "backup_id": row.backup_id,
                        "action": row.action,
                        "outcome": row.outcome,
                        "detail": row.detail,
                    }
                    for row in problems[:20]
                ],
                "failing_checks": failing,
            },
        ),
        failing,
    )


def archive_target(runtime: Runtime, target_name: str, *, dry_run: bool = False) -> TargetArchiveReport:
    """Plan and apply retention for one target; metrics and a notice unless it is a dry run.

    Never raises for a failed copy or delete (they are in the report). A target that cannot
    be planned at all (catalog or verification log unreadable) raises, after counting an
    ArchiveFailure for its alarm; a scheduled run (jobs.runner) contains and alerts it.
    """
    try:
        report = ArchiveRun(runtime, target_name, dry_run=dry_run).execute()
    except DrsentryError as exc:
        if not dry_run and not isinstance(exc, BadInput):
            observability.put_metric(observability.ARCHIVE_FAILURE, "Count", 1, target_name)
        raise
    logger.info(
        "archive summary",
        extra={
            "target": target_name,
            "summary": report.summary(),
            "counts": report.counts,
            "slots": report.slots,
        },
    )
    if dry_run:
        return report
    failures = report.failed + report.refused
    observability.put_metric(observability.ARCHIVE_FAILURE, "Count", failures, target_name)
    observability.put_metric(observability.ARCHIVED_BACKUPS, "Count", report.archived, target_name)
    observability.put_metric(observability.EXPIRED_BACKUPS, "Count", report.expired, target_name)
    if runtime.notifier is not None:
        notice, failing = notice_for(report, runtime.run_id)
        runtime.notifier.send(notice, failing_checks=failing)
    return report


class ArchiveRunResult(RunResult[TargetArchiveReport]):
    records_key: ClassVar[str] = "targets"


def run_scheduled_archive(runtime: Runtime, scheduled: ScheduledEvent) -> ArchiveRunResult:
    """The archive function's whole job for one scheduled event (Lambda and CLI alike)."""
    dry_run = scheduled.detail.dry_run
    return run_for_targets(
        runtime,
        "archive",
        scheduled,
        lambda target: [archive_target(runtime, target.name, dry_run=dry_run)],
        result_type=ArchiveRunResult,
        # A dry run changes nothing, so there is nothing to protect from a second delivery.
        idempotent=not dry_run,
    )


# reading from the archive ----------------------------------------------------------


class ArchiveAccess(BaseModel):
    """Whether an archived backup can be read now, and what to do if not."""

    backup_id: str
    bucket: str
    key: str
    version_id: str | None = None
    storage_class: str
    state: ArchiveState
    restore_tier: str | None = None
    requested_at: str | None = None
    # When S3 removes the temporary restored copy again.
    readable_until: str | None = None
    message: str


def _archive_of(record: BackupRecord) -> dict[str, Any]:
    if not is_archived(record) or record.archive is None:
        raise BadInput(f"backup {record.backup_id} has no archive copy")
    return record.archive


def _pending_message(storage_class: str, tier: str, requested_at: str) -> str:
    takes = RESTORE_TIMES.get(storage_class, {}).get(tier, "a while")
    return (
        f"archived in {storage_class}; restore requested at {requested_at}, {tier} tier takes {takes}; "
        "run again later"
    )


def archive_readable(runtime: Runtime, record: BackupRecord) -> ArchiveAccess:
    """Can the archive copy be read now? Also brings the record's restore state up to date."""
    archive = _archive_of(record)
    bucket, key = str(archive["bucket"]), str(archive.get("key") or record.key)
    version_id = archive.get("version_id")
    head = runtime.buckets.bucket(bucket).head(key, version_id)
    if head is None:
        version = f" version {version_id}" if version_id else ""
        raise StorageError(f"s3://{bucket}/{key}: the archive copy{version} is not there")
    storage_class = head.storage_class
    restore = dict(archive.get("restore") or {})
    base = {"backup_id": record.backup_id, "bucket": bucket, "key": key, "version_id": version_id}
    if storage_class in READABLE_CLASSES:
        return ArchiveAccess(
            **base, storage_class=storage_class, state="readable", message=f"readable now ({storage_class})"
        )
    state = head.restore
    tiers = ", ".join(f"{name}: {time}" for name, time in RESTORE_TIMES.get(storage_class, {}).items())
    tier = restore.get("tier")
    requested_at = restore.get("requested_at")
    if state is None:
        access = ArchiveAccess(
            **base,
            storage_class=storage_class,
            state="archived",
            message=f"archived in {storage_class} and not restored; request a restore ({tiers})",
        )
        recorded = "archived"
    elif state.ongoing:
        access = ArchiveAccess(
            **base,
            storage_class=storage_class,
            state="pending",
            restore_tier=tier,
            requested_at=requested_at,
            message=_pending_message(storage_class, tier or "Standard", requested_at or "an earlier run"),
        )
        recorded = "pending"
    else:
        access = ArchiveAccess(
            **base,
            storage_class=storage_class,
            state="readable",
            restore_tier=tier,
            requested_at=requested_at,
            readable_until=state.expiry,
            message=f"restored from {storage_class}; readable until {state.expiry or 'the restore expires'}",
        )
        recorded = "restored"
    if restore and restore.get("status") != recorded:
        restore.update(status=recorded, checked_at=iso(runtime.clock()), readable_until=access.readable_until)
        runtime.catalog.update_backup(
            record.target, record.backup_id, {"archive": {**archive, "restore": restore}}
        )
    return access


def request_archive_restore(
    runtime: Runtime, backup_id: str, tier: RestoreTier = "Standard", days: int = DEFAULT_RESTORE_DAYS
) -> ArchiveAccess:
    """Start an S3 restore of an archived backup (once), record it as pending, say when to come back.

    Returns at once: `state` is `readable` when nothing needs restoring or the restore is
    done, `pending` while S3 works on it.
    """
    if days < 1:
        raise BadInput(f"--days must be at least 1, got {days}")
    record = runtime.catalog.get_backup(backup_id)
    archive = _archive_of(record)
    access = archive_readable(runtime, record)
    if access.state != "archived":
        return access
    times = RESTORE_TIMES.get(access.storage_class, {})
    if tier not in times:
        raise BadInput(
            f"{access.storage_class} does not offer the {tier} retrieval tier; use "
            + " or ".join(f"{name} ({time})" for name, time in times.items())
        )
    archive_bucket = runtime.buckets.bucket(access.bucket)
    # Someone else asked first: that restore is as good as ours.
    with contextlib.suppress(RestoreInProgress):
        archive_bucket.request_restore(access.key, access.version_id, days=days, tier=tier)
    requested_at = iso(runtime.clock())
    restore = {"status": "pending", "tier": tier, "days": days, "requested_at": requested_at}
    runtime.catalog.update_backup(
        record.target, record.backup_id, {"archive": {**archive, "restore": restore}}
    )
    logger.info(
        "archive restore requested",
        extra={
            "target": record.target,
            "backup_id": backup_id,
            "tier": tier,
            "storage_class": access.storage_class,
        },
    )
    return access.model_copy(
        update={
            "state": "pending",
            "restore_tier": tier,
            "requested_at": requested_at,
            "message": _pending_message(access.storage_class, tier, requested_at),
        }
    )


def ensure_archive_readable(runtime: Runtime, record: BackupRecord) -> ArchiveAccess:
    """The archive copy's location when it can be read now; otherwise ArchiveNotReadable with
    a message that says what is going on (never S3's bare InvalidObjectState)."""
    access = archive_readable(runtime, record)
    if access.state != "readable":
        raise ArchiveNotReadable(f"backup {record.backup_id}: {access.message}")
    return access


def explain_unreadable(record: BackupRecord, exc: ObjectArchived) -> ArchiveNotReadable:
    """Turn S3's refusal to read an archived object (its bare InvalidObjectState) into an
    operator's message: what S3 is doing, or that a restore is needed first."""
    logger.info("archived object not readable yet", extra={"backup_id": record.backup_id, "error": str(exc)})
    archive = record.archive or {}
    restore = archive.get("restore") or {}
    storage_class = str(archive.get("storage_class") or "an archive storage class")
    if restore.get("status") == "pending":
        return ArchiveNotReadable(
            f"backup {record.backup_id}: "
            + _pending_message(
                storage_class, str(restore.get("tier") or "Standard"), str(restore.get("requested_at"))
            )
        )
    return ArchiveNotReadable(
        f"backup {record.backup_id}: archived in {storage_class} and not restored; request a restore first"
    )
