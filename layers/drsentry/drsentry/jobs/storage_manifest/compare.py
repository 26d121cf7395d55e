"""Verify's ``storage: BUCKET`` check: a backup's manifest of a bucket against the previous one.

A drop in objects or bytes beyond ``verify.storage_drop_tolerance`` fails, and a random
sample of the previous manifest's keys is checked to still exist or, in a versioned bucket,
to keep the listed version (recoverable).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from drsentry.adapters.buckets import Bucket
from drsentry.core.config import BucketConfig
from drsentry.core.errors import StorageError
from drsentry.core.records import BackupRecord, StorageManifestEntry
from drsentry.jobs.runtime import Runtime
from drsentry.jobs.storage_manifest.listing import iter_manifest
from drsentry.jobs.storage_manifest.rules import (
    CheckOutcome,
    ManifestRow,
    SampleReport,
    change,
    human_size,
    manifest_entry,
    reservoir_sample,
)

SAMPLE_KEYS = 100
HEAD_CONCURRENCY = 8
# How many older backups to look through for the previous manifest of a bucket.
PREVIOUS_LOOKBACK = 200
CHECK_PREFIX = "storage: "


def storage_check_name(bucket: BucketConfig) -> str:
    return f"{CHECK_PREFIX}{bucket.bucket}"


def _previous_manifest(
    runtime: Runtime, backup: BackupRecord, bucket: str
) -> tuple[BackupRecord, StorageManifestEntry] | None:
    for seen, record in enumerate(runtime.catalog.iter_backups(backup.target)):
        if seen >= PREVIOUS_LOOKBACK:
            break
        if record.status != "completed" or record.backup_id >= backup.backup_id:
            continue
        entry = manifest_entry(record, bucket)
        if entry is not None and entry.complete:
            return record, entry
    return None


def check_sample(bucket: Bucket, rows: list[ManifestRow], versioned: bool) -> SampleReport:
    """Does each sampled key still exist, or (versioned) keep the version the manifest listed?
    (A delete marker HEADs as no object, by key or by version.)"""

    def judge(row: ManifestRow) -> tuple[ManifestRow, str]:
        current = bucket.head(row.key)
        if current is not None:
            return row, "present" if current.etag == row.etag else "changed"
        if versioned and row.version_id and bucket.head(row.key, row.version_id) is not None:
            return row, "recoverable"
        return row, "lost"

    report = SampleReport(checked=len(rows))
    with ThreadPoolExecutor(max_workers=HEAD_CONCURRENCY, thread_name_prefix="storage-head") as pool:
        for row, verdict in pool.map(judge, rows):
            if verdict in {"present", "changed"}:
                report.present += 1
                report.changed += verdict == "changed"
            elif verdict == "recoverable":
                report.recoverable.append(row.key)
            else:
                report.lost.append(row.key)
    return report


def compare_storage(
    runtime: Runtime,
    backup: BackupRecord,
    bucket: BucketConfig,
    tolerance: float,
    rng: random.Random | None = None,
) -> tuple[CheckOutcome, str]:
    """The `storage: BUCKET` check of a verification: (outcome, detail)."""
    current = manifest_entry(backup, bucket.bucket)
    if current is None:
        why = "taken before the bucket was configured?"
        return "skipped", f"backup {backup.backup_id} has no manifest of {bucket.bucket} ({why})"
    if not current.complete or current.objects is None or current.bytes is None:
        return "failed", f"no manifest of {bucket.bucket} with backup {backup.backup_id}: {current.error}"
    objects, size = current.objects, current.bytes
    now = f"{objects:,} objects, {human_size(size)}"
    found = _previous_manifest(runtime, backup, bucket.bucket)
    if found is None:
        return "skipped", f"{now}; no earlier manifest of {bucket.bucket} to compare with"
    previous, before = found
    before_objects, before_size = before.objects or 0, before.bytes or 0
    object_change, size_change = change(before_objects, objects), change(before_size, size)
    dropped = -object_change > tolerance or -size_change > tolerance
    counts = (
        f"objects {before_objects:,} -> {objects:,} ({object_change:+.1%}), "
        f"bytes {human_size(before_size)} -> {human_size(size)} ({size_change:+.1%}) "
        f"since backup {previous.backup_id}; "
        f"a drop of more than {tolerance:.0%} fails"
    )
    if dropped:
        counts = f"DROP beyond tolerance (mass deletion?): {counts}"
    try:
        rows = iter_manifest(runtime.buckets.bucket(previous.bucket), before.key, before.sha256)
        sample = reservoir_sample(rows, SAMPLE_KEYS, rng or random.Random())
        report = check_sample(
            runtime.buckets.bucket(bucket.bucket, before.region or bucket.region),
            sample,
            bool(before.versioned),
        )
    except StorageError as exc:
        return "failed", f"{counts}; the previous manifest could not be checked: {exc}"
    return ("failed" if dropped else "passed"), f"{counts}; {report.describe()}"
