"""Rebuild catalog records from the manifests beside the dumps.

Every completed backup writes its manifest before its catalog record, so when the record
write fails (DynamoDB throttled or down) or the table is lost, the bucket alone is enough
to restore the catalog. Existing records are never overwritten. A dump that has neither a
completed record nor a manifest to recreate one from (its run was killed between the upload
and the record) is reported as unrecorded (jobs/backup/unrecorded.py).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationError

from drsentry.core import gfs
from drsentry.core.errors import StorageError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord
from drsentry.jobs.backup.unrecorded import find_unrecorded
from drsentry.jobs.runtime import Runtime

MANIFEST_SUFFIX = ".manifest.json"


class RebuildReport(BaseModel):
    target: str
    manifests: int = 0
    already_present: int = 0
    added: list[str] = Field(default_factory=list)
    unreadable: dict[str, str] = Field(default_factory=dict)  # manifest key -> why
    # Dumps stored without a completed record that this rebuild could not recreate (no
    # manifest, or a failed record beside them): dump key -> why.
    unrecorded: dict[str, str] = Field(default_factory=dict)
    dry_run: bool = False


def _manifest_keys(runtime: Runtime, target: str) -> list[str]:
    storage = runtime.config.storage
    listing = runtime.buckets.bucket(storage.bucket).iter_objects(f"{storage.prefix}{target}/")
    return sorted(entry.key for entry in listing if entry.key.endswith(MANIFEST_SUFFIX))


def _read_manifest(runtime: Runtime, key: str) -> BackupRecord:
    bucket = runtime.config.storage.bucket
    manifest = runtime.buckets.bucket(bucket).get_json(key)
    try:
        record = BackupRecord.model_validate(manifest)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise StorageError(f"s3://{bucket}/{key}: not a backup manifest ({where}: {first['msg']})") from exc
    if record.manifest_key != key:
        raise StorageError(f"s3://{bucket}/{key}: manifest names another key ({record.manifest_key})")
    for stored in record.objects():
        if stored.kind == "dump" and runtime.buckets.bucket(record.bucket).head(stored.key) is None:
            raise StorageError(
                f"s3://{record.bucket}/{stored.key}: the dump this manifest describes is missing"
            )
    return record


def _with_tiers(new: list[BackupRecord], existing: list[BackupRecord]) -> list[BackupRecord]:
    """Tiers for recovered records, by the same rule as at backup time."""
    completed = sorted(
        [r for r in [*new, *existing] if r.status == "completed"], key=lambda record: record.backup_id
    )
    previous_started = None
    tiers: dict[str, str] = {}
    for record in completed:
        tiers[record.backup_id] = gfs.assign_tier(record.started, previous_started)
        previous_started = record.started
    return [r if r.tier else r.model_copy(update={"tier": tiers.get(r.backup_id)}) for r in new]


def rebuild_target(runtime: Runtime, target: str, *, dry_run: bool = False) -> RebuildReport:
    report = RebuildReport(target=target, dry_run=dry_run)
    existing = {record.backup_id: record for record in runtime.catalog.iter_backups(target)}
    recovered: list[BackupRecord] = []
    for key in _manifest_keys(runtime, target):
        report.manifests += 1
        try:
            record = _read_manifest(runtime, key)
        except StorageError as exc:
            report.unreadable[key] = str(exc)
            logger.warning("manifest not usable", extra={"key": key, "reason": str(exc)})
            continue
        if record.backup_id in existing:
            report.already_present += 1
        else:
            recovered.append(record)
    for record in _with_tiers(recovered, list(existing.values())):
        if not dry_run:
            runtime.catalog.put_backup(record)
        report.added.append(record.backup_id)
    for dump in find_unrecorded(runtime, target):
        if dump.backup_id not in report.added:
            report.unrecorded[dump.key] = dump.reason()
            logger.warning(
                "dump without a completed record", extra={"key": dump.key, "reason": dump.reason()}
            )
    return report


def rebuild_catalog(
    runtime: Runtime, target: str | None = None, *, dry_run: bool = False
) -> list[RebuildReport]:
    return [rebuild_target(runtime, t.name, dry_run=dry_run) for t in runtime.config.selected_targets(target)]
