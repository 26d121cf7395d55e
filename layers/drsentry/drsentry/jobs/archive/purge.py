"""Purging what failed backup runs withdrew, and reporting a completed backup someone hid.

The backup role may create objects but never destroy a version (template.yaml, BackupPolicy):
a failed or interrupted run withdraws what it stored with a delete marker on each key
(`Bucket.hide`), so no reader sees a partial object, but the versions stay. The archive role
may delete, so each archive run, for its target, looks at the keys under a backup's prefix
whose current version is a delete marker:

- of a backup whose record is `failed`, or that has no record and was withdrawn longer ago than
  a backup run's lock lives (the run could not write its `failed` record), every version and
  the marker are deleted: `purged`. Object Lock refuses a locked version; it is left and
  counted (`purge_locked`), never forced.
- of a `completed` backup: never deleted. A good backup hidden behind a marker is the mark of a
  compromised backup function or a mistake; the run reports it as a warning, and deleting the
  marker restores it.

The bucket's lifecycle rule (noncurrent versions expire after 30 days) stays the backstop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pydantic import BaseModel

from drsentry.adapters.buckets import VersionEntry
from drsentry.core.errors import DeleteRefused, DrsentryError
from drsentry.core.observability import logger
from drsentry.jobs.backup.rules import backup_id_of, objects_prefix
from drsentry.jobs.backup.run import LOCK_TTL_SECONDS
from drsentry.jobs.runtime import Runtime

# A withdrawn backup with no record is purged only once the run that withdrew it is surely over.
UNRECORDED_GRACE = timedelta(seconds=LOCK_TTL_SECONDS)


class HiddenBackup(BaseModel):
    """A completed backup whose objects a delete marker hides."""

    backup_id: str
    keys: list[str]

    def warning(self) -> str:
        return (
            f"completed backup hidden by a delete marker: remove the marker to restore it "
            f"({', '.join(self.keys)})"
        )


@dataclass(frozen=True)
class Withdrawn:
    """The withdrawn keys of one backup and every version and delete marker of them."""

    backup_id: str
    versions: tuple[tuple[str, str], ...]  # (key, version id) of the stored versions
    markers: tuple[tuple[str, str], ...]  # (key, version id) of the delete markers


@dataclass(frozen=True)
class PurgePlan:
    purge: list[Withdrawn] = field(default_factory=list)
    hidden_completed: list[HiddenBackup] = field(default_factory=list)


def _backup_id(key: str, prefix: str, target: str) -> str | None:
    """The backup a key belongs to: its file name's, or its folder's for a database of several."""
    parent = key.rsplit("/", 2)[-2] if key.count("/") >= 2 else ""
    backup_id = backup_id_of(key) or backup_id_of(parent)
    if backup_id is None or not key.startswith(objects_prefix(prefix, target, backup_id)):
        return None
    return backup_id


def plan_purge(
    versions: Iterable[VersionEntry],
    statuses: Mapping[str, str],
    *,
    prefix: str,
    target: str,
    now: datetime,
    grace: timedelta = UNRECORDED_GRACE,
) -> PurgePlan:
    """Which withdrawn backups to purge and which hidden completed ones to report, from a listing of
    the target's versions and each backup id's record status."""
    by_key: dict[str, list[VersionEntry]] = {}
    for entry in versions:
        by_key.setdefault(entry.key, []).append(entry)
    hidden: dict[str, list[VersionEntry]] = {}  # backup id -> the entries of its hidden keys
    hidden_keys: dict[str, list[str]] = {}
    for key, entries in by_key.items():
        if not any(entry.is_latest and entry.delete_marker for entry in entries):
            continue
        backup_id = _backup_id(key, prefix, target)
        if backup_id is None:
            continue
        hidden.setdefault(backup_id, []).extend(entries)
        hidden_keys.setdefault(backup_id, []).append(key)
    plan = PurgePlan()
    for backup_id in sorted(hidden):
        status = statuses.get(backup_id)
        if status == "completed":
            keys = sorted(hidden_keys[backup_id])
            plan.hidden_completed.append(HiddenBackup(backup_id=backup_id, keys=keys))
            continue
        entries = hidden[backup_id]
        newest = max((entry.last_modified for entry in entries if entry.last_modified), default=None)
        settled = newest is not None and newest <= now - grace
        if status == "failed" or (status is None and settled):
            stored = tuple((entry.key, entry.version_id) for entry in entries if not entry.delete_marker)
            markers = tuple((entry.key, entry.version_id) for entry in entries if entry.delete_marker)
            plan.purge.append(Withdrawn(backup_id, versions=stored, markers=markers))
    return plan


@dataclass
class PurgeOutcome:
    purged: int = 0
    locked: int = 0
    problems: list[str] = field(default_factory=list)
    hidden_completed: list[HiddenBackup] = field(default_factory=list)


def purge_withdrawn(runtime: Runtime, target: str, *, dry_run: bool) -> PurgeOutcome:
    """Purge the target's withdrawn failed backups (not in a dry run) and find hidden completed ones."""
    storage = runtime.config.storage
    bucket = runtime.buckets.bucket(storage.bucket)
    statuses = {record.backup_id: record.status for record in runtime.catalog.iter_backups(target)}
    plan = plan_purge(
        bucket.iter_versions(f"{storage.prefix}{target}/"),
        statuses,
        prefix=storage.prefix,
        target=target,
        now=runtime.clock(),
    )
    outcome = PurgeOutcome(hidden_completed=plan.hidden_completed)
    for hidden in plan.hidden_completed:
        logger.warning(hidden.warning(), extra={"target": target, "backup_id": hidden.backup_id})
    if dry_run:
        return outcome
    for withdrawn in plan.purge:
        try:
            # The markers last: should a version be locked, it stays hidden.
            bucket.delete_versions(list(withdrawn.versions))
            bucket.delete_versions(list(withdrawn.markers))
        except DeleteRefused:
            outcome.locked += 1  # Object Lock protects it: left, never forced
            continue
        except DrsentryError as exc:
            outcome.problems.append(f"purging withdrawn backup {withdrawn.backup_id} failed: {exc}")
            continue
        outcome.purged += 1
    return outcome
