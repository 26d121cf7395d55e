"""The pure rules of a backup: where its objects go, what its manifest says, what its notice
says, and which metrics it emits. No I/O."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from drsentry.adapters.pgmeta import DatabaseFacts
from drsentry.core import observability
from drsentry.core.records import BACKUP_ID_RE, BackupRecord, RunNotice
from drsentry.jobs.storage_manifest.rules import storage_problems

MANIFEST_FORMAT = "drsentry-backup/1"
DUMP_SUFFIX = ".dump"
MANIFEST_SUFFIX = ".manifest.json"
COMPRESSION = "zstd"

# (metric name, unit, value): what `observability.put_metric` takes for one target.
Metric = tuple[str, str, float]


def object_keys(prefix: str, target: str, backup_id: str) -> tuple[str, str]:
    """`{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}.dump` and its manifest."""
    base = objects_prefix(prefix, target, backup_id)
    return f"{base}{DUMP_SUFFIX}", f"{base}{MANIFEST_SUFFIX}"


def objects_prefix(prefix: str, target: str, backup_id: str) -> str:
    """What every object of one backup starts with (dump, manifest, roles object, storage
    manifests): `{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}`. Backup ids have one length,
    so no other backup's objects share it."""
    day = f"{backup_id[0:4]}/{backup_id[4:6]}/{backup_id[6:8]}"
    return f"{prefix}{target}/{day}/{backup_id}"


def backup_id_of(key: str) -> str | None:
    """The backup id an object key of a backup starts its file name with, or None."""
    name = key.rsplit("/", 1)[-1].split(".", 1)[0]
    return name if BACKUP_ID_RE.match(name) else None


def database_object_keys(prefix: str, target: str, backup_id: str, database: str) -> tuple[str, str]:
    """One database of a backup of several, under the backup's key prefix:
    `{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}/{database}.dump` and its manifest
    (`.db-manifest.json`, so that `catalog rebuild` reads only the backup's own manifest). The
    name is percent-encoded: a database may be called anything, a key must stay one key."""
    dump_key, _ = object_keys(prefix, target, backup_id)
    base = f"{dump_key.removesuffix('.dump')}/{quote(database, safe='')}"
    return f"{base}.dump", f"{base}.db-manifest.json"


def tool_failure(command: str, return_code: int, lines: list[str]) -> str:
    """What a failed pg_dump's (or pg_dumpall's) record says: how it ended and its first error lines."""
    if return_code < 0:
        reason = f"{command} was killed by signal {-return_code}"
    else:
        reason = f"{command} exited with code {return_code}"
    detail = "; ".join(line.strip() for line in lines[:3])
    return f"{reason}: {detail}" if detail else reason


def globals_key(prefix: str, target: str, backup_id: str) -> str:
    """The roles object beside the dump: `{prefix}{target}/{YYYY}/{MM}/{DD}/{backup_id}.globals.sql`."""
    dump_key, _ = object_keys(prefix, target, backup_id)
    return dump_key.removesuffix(".dump") + ".globals.sql"


def backup_manifest(record: BackupRecord, facts: DatabaseFacts | None) -> dict[str, Any]:
    """The JSON document stored beside the dump: the record, what the snapshot held, and how
    to restore the dump without drsentry. A backup of several databases has one per database
    (`facts` of that database) and its own, the whole record (`facts` None)."""
    dump_name = record.key.rsplit("/", 1)[-1]
    return {
        "format": MANIFEST_FORMAT,
        "dump_format": "pg_dump custom format, zstd-compressed",
        "restore_hint": f"zstd -dc {dump_name} | pg_restore --dbname=DSN",
        **record.model_dump(),
        **(facts.manifest_fields() if facts is not None else {}),
    }


def backup_metrics(record: BackupRecord, newest_completed_age: float | None) -> list[Metric]:
    """The metrics of one backup. A failed one reports the age of the newest completed backup
    (`newest_completed_age`, None when unknown: the alarm treats missing data as stale)."""
    metrics: list[Metric]
    if record.status == "completed":
        seconds = max(record.duration_seconds or 0.0, 0.001)
        megabytes = (record.database_size_bytes or 0) / 1e6
        metrics = [
            (observability.BACKUP_SUCCESS, "Count", 1),
            (observability.BACKUP_FAILURE, "Count", 0),
            (observability.BACKUP_SIZE_BYTES, "Bytes", record.size_bytes or 0),
            (observability.BACKUP_AGE_SECONDS, "Seconds", 0),
            (observability.BACKUP_THROUGHPUT_MBPS, "None", megabytes / seconds),
        ]
    else:
        metrics = [(observability.BACKUP_SUCCESS, "Count", 0), (observability.BACKUP_FAILURE, "Count", 1)]
        if newest_completed_age is not None:
            metrics.append((observability.BACKUP_AGE_SECONDS, "Seconds", newest_completed_age))
    metrics.append((observability.BACKUP_DURATION_SECONDS, "Seconds", record.duration_seconds or 0.0))
    return metrics


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
