"""Copy mode (``storage.replica.mode: copy``): right after a backup completes,
``replicate_backup`` copies the dump, its manifest and its roles object server-side into the
replica bucket (same keys), keeping the source's metadata and tags, locks them until the backup's
Object Lock date (the replica bucket has Object Lock too), then HEADs the copies and
compares their size and SHA-256 with the backup record. The replica state (``ok`` | ``mismatch`` |
``failed``) and where it was checked go on the record. A failed copy never fails the
backup: it is recorded and the replication check reports it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from drsentry.adapters.buckets import Bucket, CopyParts, MiB
from drsentry.core.errors import BackupNotFound, CatalogError, StorageError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, iso, parse_iso
from drsentry.jobs.object_lock import backup_keys, lock_objects
from drsentry.jobs.replication.objects import establish_sha256, facts_of, small_object_facts
from drsentry.jobs.replication.rules import (
    ObjectFacts,
    ReplicaState,
    Verdict,
    judge_backup,
    judge_globals,
    replica_detail,
)

if TYPE_CHECKING:
    from drsentry.core.config import ReplicaConfig
    from drsentry.jobs.runtime import Runtime

# A cross-region copy that cannot finish before the function is killed is not started.
COPY_TIME_MARGIN_SECONDS = 60.0
# Parts copied in parallel make a cross-region copy of a large dump minutes, not hours;
# boto3 grows the part size itself when an object would need more than 10,000 parts.
COPY_PARTS = CopyParts(threshold=256 * MiB, part_size=256 * MiB, concurrency=10)


def copy_object(source: Bucket, replica: Bucket, key: str, *, parts: CopyParts = COPY_PARTS) -> None:
    """Server-side copy of the current version of one object into the replica bucket.

    The version HEADed is the version copied, even if the key changes meanwhile; its
    metadata and tags are passed explicitly, so a multipart copy keeps them.
    """
    head = source.head(key)
    if head is None:
        raise StorageError(f"s3://{source.name}/{key}: not there to copy")
    tags = source.tags(key, head.version_id)
    replica.copy_in(source, head, metadata=head.metadata, tags=tags, parts=parts)


def _judge_copy(
    replica_bucket: Bucket, record: BackupRecord, replica: ReplicaConfig
) -> tuple[Verdict, ObjectFacts]:
    """The copied dump of `record` (a single-database backup or one database's view) judged."""
    copied = facts_of(replica_bucket, record.key, replica_bucket.head(record.key))
    copied = establish_sha256(
        replica_bucket,
        record.key,
        copied,
        expected_size=record.size_bytes,
        changed=False,
    )
    verdict = judge_backup(
        mode="copy",
        expected_size=record.size_bytes,
        expected_sha256=record.sha256,
        replica=copied,
        source=None,
        manifest_present=True,
        age_seconds=0.0,
        max_lag_seconds=replica.max_lag.total_seconds(),
    )
    return verdict, copied


def replicate_backup(runtime: Runtime, record: BackupRecord) -> BackupRecord:
    """Copy a completed backup (dump, manifest and roles object) to the replica bucket and check the copy.

    Does nothing unless ``storage.replica.mode`` is ``copy`` and the backup completed, so
    the backup calls it unconditionally. Never raises for a failed copy: the state
    (``ok`` | ``mismatch`` | ``failed``) and its reason go on the backup record, which is
    returned updated.
    """
    replica = runtime.config.storage.replica
    if replica is None or replica.mode != "copy" or record.status != "completed":
        return record
    source = runtime.buckets.bucket(record.bucket, runtime.config.storage.region)
    replica_bucket = runtime.buckets.bucket(replica.bucket, replica.region)
    state: ReplicaState
    error: str | None = None
    verified: ObjectFacts | None = None
    remaining = runtime.remaining_seconds()
    try:
        if remaining is not None and remaining < COPY_TIME_MARGIN_SECONDS:
            raise StorageError(f"only {remaining:.0f}s of run time left, the copy was not started")
        # The replica's region has its own KMS key (Bucket writes with the regional one).
        keys = [record.key, record.manifest_key] + ([record.globals.key] if record.globals else [])
        for key in record.all_keys() if record.databases else keys:
            copy_object(source, replica_bucket, key)
        if record.retain_until and record.lock_mode:
            # The replica is locked until the same date: it is the copy that survives a lost region.
            lock_objects(
                replica_bucket,
                backup_keys(record),
                mode=record.lock_mode,
                until=parse_iso(record.retain_until),
            )
        # Every dump of the backup (one per database of a backup of several): the first not ok
        # decides; the verified fingerprint is the first dump's.
        judged = [_judge_copy(replica_bucket, dump, replica) for dump in record.database_views()]
        verdict, copied = judged[0]
        for name, (database_verdict, _facts) in zip(record.database_names, judged, strict=False):
            if database_verdict.state != "ok":
                verdict = replace(database_verdict, reason=f"database {name}: {database_verdict.reason}")
                break
        if verdict.state == "ok" and record.globals is not None:
            globals_key = record.globals.key
            copied_globals = small_object_facts(replica_bucket, globals_key, replica_bucket.head(globals_key))
            verdict = judge_globals(record.globals, copied_globals) or verdict
        if verdict.state == "ok":
            state, verified = "ok", copied
        elif verdict.state == "mismatch":
            state, error = "mismatch", verdict.reason
        else:
            state, error = "failed", f"the copy is not in s3://{replica.bucket}: {verdict.reason}"
    except StorageError as exc:
        state, error = "failed", str(exc)
    detail = replica_detail(replica, iso(runtime.clock()), error, verified)
    log = logger.info if state == "ok" else logger.error
    log(
        "replica copy",
        extra={"target": record.target, "backup_id": record.backup_id, "replica": state, "error": error},
    )
    try:
        runtime.catalog.update_backup(
            record.target, record.backup_id, {"replica": state, "replica_detail": detail.model_dump()}
        )
    except (CatalogError, BackupNotFound) as exc:
        # The copy itself is what matters; the hourly check records the state it finds.
        logger.error(
            "recording the replica state failed", extra={"backup_id": record.backup_id, "error": str(exc)}
        )
    return record.model_copy(update={"replica": state, "replica_detail": detail})
