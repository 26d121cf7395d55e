"""Reading an archived backup (used by recovery when the primary copy has expired).

`archive_readable` says whether the archive copy can be read now, `request_archive_restore`
starts an S3 restore for GLACIER / DEEP_ARCHIVE and records it as pending, and
`ensure_archive_readable` / `explain_unreadable` turn "not yet" into one clear message
instead of S3's raw `InvalidObjectState`.
"""

from __future__ import annotations

import contextlib
from typing import Literal

from pydantic import BaseModel

from drsentry.core.errors import BadInput, DrsentryError, ObjectArchived, RestoreInProgress, StorageError
from drsentry.core.gfs import is_archived
from drsentry.core.observability import logger
from drsentry.core.records import (
    ArchiveCopy,
    ArchiveRestore,
    ArchiveRestoreStatus,
    BackupRecord,
    RestoreTier,
    iso,
)
from drsentry.jobs.runtime import Runtime

# Storage classes S3 serves without a restore.
READABLE_CLASSES = frozenset({"STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "GLACIER_IR"})
RESTORE_TIMES: dict[str, dict[str, str]] = {
    "DEEP_ARCHIVE": {"Standard": "up to 12 h", "Bulk": "up to 48 h"},
    "GLACIER": {"Expedited": "1-5 minutes", "Standard": "3-5 h", "Bulk": "5-12 h"},
}
DEFAULT_RESTORE_DAYS = 7

ArchiveState = Literal["readable", "pending", "archived"]


class ArchiveNotReadable(DrsentryError):
    """The backup lives only in an archive storage class and is not restored (yet)."""


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


def _archive_of(record: BackupRecord) -> ArchiveCopy:
    if not is_archived(record) or record.archive is None:
        raise BadInput(f"backup {record.backup_id} has no archive copy")
    return record.archive


def _pending_message(storage_class: str, tier: str, requested_at: str) -> str:
    takes = RESTORE_TIMES.get(storage_class, {}).get(tier, "a while")
    return (
        f"archived in {storage_class}; restore requested at {requested_at}, {tier} tier takes {takes}; "
        "run again later"
    )


def _record_restore(
    runtime: Runtime, record: BackupRecord, archive: ArchiveCopy, restore: ArchiveRestore
) -> None:
    """The archive sub-document with this restore state, stored as the catalog holds it."""
    runtime.catalog.update_backup(
        record.target,
        record.backup_id,
        {"archive": archive.model_copy(update={"restore": restore}).model_dump()},
    )


def archive_readable(runtime: Runtime, record: BackupRecord) -> ArchiveAccess:
    """Can the archive copy be read now? Also brings the record's restore state up to date."""
    archive = _archive_of(record)
    bucket, key = archive.bucket, archive.key or record.key
    version_id = archive.version_id
    head = runtime.buckets.bucket(bucket).head(key, version_id)
    if head is None:
        version = f" version {version_id}" if version_id else ""
        raise StorageError(f"s3://{bucket}/{key}: the archive copy{version} is not there")
    storage_class = head.storage_class
    restore = archive.restore
    base = {"backup_id": record.backup_id, "bucket": bucket, "key": key, "version_id": version_id}
    if storage_class in READABLE_CLASSES:
        return ArchiveAccess(
            **base, storage_class=storage_class, state="readable", message=f"readable now ({storage_class})"
        )
    state = head.restore
    tiers = ", ".join(f"{name}: {time}" for name, time in RESTORE_TIMES.get(storage_class, {}).items())
    tier = restore.tier if restore is not None else None
    requested_at = restore.requested_at if restore is not None else None
    recorded: ArchiveRestoreStatus
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
    if restore is not None and restore.status != recorded:
        checked = {
            "status": recorded,
            "checked_at": iso(runtime.clock()),
            "readable_until": access.readable_until,
        }
        _record_restore(runtime, record, archive, restore.model_copy(update=checked))
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
    restore = ArchiveRestore(status="pending", tier=tier, days=days, requested_at=requested_at)
    _record_restore(runtime, record, archive, restore)
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
    archive = record.archive
    restore = archive.restore if archive is not None else None
    storage_class = (archive.storage_class if archive is not None else None) or "an archive storage class"
    if restore is not None and restore.status == "pending":
        return ArchiveNotReadable(
            f"backup {record.backup_id}: "
            + _pending_message(storage_class, restore.tier or "Standard", str(restore.requested_at))
        )
    return ArchiveNotReadable(
        f"backup {record.backup_id}: archived in {storage_class} and not restored; request a restore first"
    )
