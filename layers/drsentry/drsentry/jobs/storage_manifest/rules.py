"""The pure rules of storage manifests: where one is kept, what a row holds, how a sample is
drawn and reported, and what one key needs to be as the manifest lists it. No I/O."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

from drsentry.adapters.buckets import ObjectEntry, VersionEntry
from drsentry.core.records import BackupRecord, StorageManifestEntry

MANIFEST_FORMAT = "drsentry-storage/1"
MANIFEST_SUFFIX = ".jsonl.gz"
# Keys named in a check's detail; the rest are counted.
NAMED_KEYS = 5

CheckOutcome = Literal["passed", "failed", "skipped"]
RestoreAction = Literal["current", "restore", "missing"]


def storage_manifest_key(prefix: str, target: str, backup_id: str, bucket: str) -> str:
    """Beside the dump: `{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}.storage.{bucket}.jsonl.gz`."""
    day = f"{backup_id[0:4]}/{backup_id[4:6]}/{backup_id[6:8]}"
    return f"{prefix}{target}/{day}/{backup_id}.storage.{bucket}{MANIFEST_SUFFIX}"


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1000 or unit == "TB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000
    return f"{size:,.1f} TB"


# Rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManifestRow:
    key: str
    size: int
    etag: str
    last_modified: str | None
    storage_class: str
    version_id: str | None

    def line(self) -> bytes:
        return (json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def manifest_row(entry: ObjectEntry | VersionEntry, version_id: str | None) -> ManifestRow:
    return ManifestRow(
        key=entry.key,
        size=entry.size_bytes,
        etag=entry.etag,
        last_modified=_iso(entry.last_modified),
        storage_class=entry.storage_class,
        version_id=version_id,
    )


# The backup record's entries -------------------------------------------------------------------


def manifest_entry(record: BackupRecord, bucket: str) -> StorageManifestEntry | None:
    """The record's entry for one application bucket, if the backup manifested it."""
    return next((entry for entry in record.storage or [] if entry.bucket == bucket), None)


def storage_problems(record: BackupRecord) -> list[str]:
    """One line per bucket whose manifest failed: what the backup notice warns about."""
    entries = record.storage or []
    return [f"{entry.bucket}: {entry.error}" for entry in entries if entry.error]


# Verify: the comparison and the sample -------------------------------------------------------


def change(before: int, after: int) -> float:
    return 0.0 if before == 0 else (after - before) / before


def reservoir_sample(rows: Iterator[ManifestRow], size: int, rng: random.Random) -> list[ManifestRow]:
    """`size` rows chosen uniformly from a stream of unknown length, holding only `size` of them."""
    sample: list[ManifestRow] = []
    for seen, row in enumerate(rows):
        if seen < size:
            sample.append(row)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                sample[slot] = row
    return sample


@dataclass
class SampleReport:
    checked: int = 0
    present: int = 0
    changed: int = 0
    recoverable: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if not self.checked:
            return "the previous manifest lists no keys to sample"
        missing = len(self.recoverable) + len(self.lost)
        text = f"{self.checked} sampled keys of the previous manifest: {self.present} present"
        if self.changed:
            text += f" ({self.changed} changed since)"
        if missing:
            text += f", {missing} missing"
            if self.recoverable:
                recoverable = self.recoverable
                text += f": {len(recoverable)} recoverable from a prior version ({_names(recoverable)})"
            if self.lost:
                text += f"{';' if self.recoverable else ':'} {len(self.lost)} lost ({_names(self.lost)})"
        return text


def _names(keys: list[str]) -> str:
    shown = ", ".join(sorted(keys)[:NAMED_KEYS])
    return shown + (f" and {len(keys) - NAMED_KEYS} more" if len(keys) > NAMED_KEYS else "")


# Restore list: one key against the bucket now ------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyState:
    """What the bucket holds for one key now."""

    key: str
    current_version: str | None
    current_etag: str | None
    versions: dict[str, str]  # version id -> ETag, delete markers excluded


def judge_key(
    row: ManifestRow, state: KeyState | None, versioned: bool
) -> tuple[RestoreAction, str | None, str]:
    """(action, version id to restore, note) for one manifest row against the bucket now."""
    if state is None:
        note = "every version is gone" if versioned else "deleted (bucket not versioned)"
        return "missing", None, note
    if versioned and row.version_id:
        if state.current_version == row.version_id:
            return "current", row.version_id, ""
        if row.version_id in state.versions:
            why = "a newer version replaced it" if state.current_version else "deleted (delete marker)"
            return "restore", row.version_id, why
        return "missing", None, f"version {row.version_id} is gone"
    if state.current_etag == row.etag:
        return "current", None, ""
    note = "overwritten (bucket not versioned)" if state.current_etag else "deleted (bucket not versioned)"
    return "missing", None, note
