"""Cross-region replication: the copy after each backup, and the check that proves the
second copy is really there.

Two modes (``storage.replica.mode``):

- ``copy``: right after a backup completes, ``replicate_backup`` copies the dump and its
  manifest server-side into the replica bucket (same keys), keeping the source's metadata
  and tags, then HEADs the copy and compares its size and SHA-256 with the backup record. The replica
  state (``ok`` | ``mismatch`` | ``failed``) and where it was checked go on the record. A
  failed copy never fails the backup: it is recorded and the replication check reports it.
- ``crr``: S3 Cross-Region Replication copies; drsentry only checks.

The check (``check_replication``, hourly through its Lambda) reads the completed backups
of the last ``WINDOW`` (7 days; shorter when the oldest kept backup is younger) with one
paginated key-range query, lists the replica bucket's folders those backups live in (a
LIST page per 1,000 objects), and judges each backup:

- Fast path: a replica already verified identical whose size, ETag and last-modified time
  are unchanged in the listing (and whose manifest is listed) is still identical: nothing
  can change an object's bytes without changing those. In the steady state that is every
  backup but the newest, so 10,000 backups cost a few LIST requests instead of 10,000 HEADs.
- Otherwise HEADs, concurrently in a bounded pool (``HEAD_CONCURRENCY``), judged by
  ``judge_backup``, a pure function of the HEAD responses:

===========================================  ==========  ============================
what the HEADs show                          state       severity
===========================================  ==========  ============================
crr: source ``ReplicationStatus`` FAILED     failed      critical
replica present, size differs                mismatch    critical
replica present, SHA-256 differs             mismatch    critical
replica present, manifest copy absent        missing     critical
replica present and identical                ok          ok
crr: absent, source PENDING                  pending     by lag (below)
copy: absent, the copy had failed            missing     critical
copy: absent, backup younger than max_lag    pending     ok (the copy may be running)
otherwise absent                             missing     critical
HEAD failed (403, 5xx, network)              unchecked   critical (state left as it was)
===========================================  ==========  ============================

Lag (``lag_severity``): a replica pending for at most ``max_lag`` is fine, up to twice
``max_lag`` is a warning, beyond that critical. S3 Replication Time Control promises 15
minutes for 99.99% of objects and most replicate in seconds, so twice the tolerated lag
means replication is stuck, not slow. The age is counted from the backup's finish.

The SHA-256 of a replica comes from its ``sha256`` tag (the backup tags the dump once its
last byte is written), which the copy (and CRR) carries. The object is read and hashed
instead when the tag is missing (a copy by another tool; a CRR replica made before the
tag was set), or when the replica was written since it was verified (another ETag or
last-modified time than the recorded ``replica_detail``; in crr mode also another version
id than the source's, which CRR keeps): that is how a replica overwritten with other bytes
is caught even if its tags were copied along.

Bucket checks: versioning on both buckets (critical in crr mode, which requires it; a
warning in copy mode, where it is what makes a deleted or overwritten copy recoverable),
in crr mode an enabled replication rule to the replica bucket covering the backup
prefix, and the replica region really differing from the primary's (configured and
actual bucket locations).

Results: one record per check and target in the catalog table (pk ``target#{name}``, sk
``replication#{checked_at}#{run_id}``, kept 90 days), the metrics ``ReplicaMissing``
(absent or FAILED replicas), ``ReplicaMismatch`` and ``ReplicationLagSeconds`` (age of the
oldest backup not yet safely replicated), the replica state of each backup record whose
state changed, and one notice on the alerts route.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from drsentry.adapters.buckets import (
    SHA256_TAG,
    Bucket,
    CopyParts,
    MiB,
    ObjectHead,
    ReplicationRule,
)
from drsentry.core import observability
from drsentry.core.config import ReplicaConfig, TargetConfig
from drsentry.core.errors import BackupNotFound, BadInput, BucketNotFound, CatalogError, StorageError
from drsentry.core.events import ScheduledEvent
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, RunNotice, Severity, iso, parse_iso
from drsentry.jobs.runner import RunResult, run_for_targets

if TYPE_CHECKING:
    from drsentry.jobs.runtime import Runtime

WINDOW = timedelta(days=7)
HEAD_CONCURRENCY = 16
# The stored record, the idempotency record and the alert must stay far below DynamoDB's
# 400 KB item limit even when thousands of replicas are missing; counts stay exact.
MAX_LISTED = 100
# Stop waiting for HEADs this long before Lambda's hard limit, so the record is still written.
CHECK_TIME_MARGIN_SECONDS = 30.0
# A cross-region copy that cannot finish before the function is killed is not started.
COPY_TIME_MARGIN_SECONDS = 60.0
# Parts copied in parallel make a cross-region copy of a large dump minutes, not hours;
# boto3 grows the part size itself when an object would need more than 10,000 parts.
COPY_PARTS = CopyParts(threshold=256 * MiB, part_size=256 * MiB, concurrency=10)

ReplicaState = Literal["pending", "ok", "failed", "mismatch", "missing"]
Judgement = Literal["ok", "warning", "critical"]
ProblemSeverity = Literal["critical", "warning"]
CheckStatus = Literal["ok", "warning", "failure"]
ReplicationMode = Literal["copy", "crr"]
# (ETag without quotes, last-modified as ISO 8601 to the second)
Fingerprint = tuple[str, str]
NOTICE_SEVERITY: dict[CheckStatus, Severity] = {"failure": "critical", "warning": "warning", "ok": "info"}


# the rules (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class ObjectFacts:
    """What one HEAD said about one object."""

    exists: bool
    size_bytes: int | None = None
    # From the `sha256` tag, or from reading the object when `sha256_read`.
    sha256: str | None = None
    sha256_read: bool = False
    version_id: str | None = None
    fingerprint: Fingerprint | None = None
    # COMPLETED | PENDING | FAILED (on a source) | REPLICA (on a replica) | None (no rule)
    replication_status: str | None = None


def fingerprint_of(etag: str | None, last_modified: datetime | None) -> Fingerprint | None:
    """ETag and last-modified second: any write of other bytes to the key changes them.

    HEAD and LIST report the same two values (LIST to the millisecond, HEAD to the second,
    hence seconds), so a fingerprint taken from a HEAD can be recognised in a listing.
    """
    if not etag or last_modified is None:
        return None
    return (etag.strip('"'), iso(last_modified))


def object_facts(head: ObjectHead | None, tags: Mapping[str, str] | None = None) -> ObjectFacts:
    """The facts of a HEAD and the object's tags, or of an absent object (None)."""
    if head is None:
        return ObjectFacts(exists=False)
    return ObjectFacts(
        exists=True,
        size_bytes=head.size_bytes,
        sha256=(tags or {}).get(SHA256_TAG) or None,
        version_id=head.version_id,
        fingerprint=fingerprint_of(head.etag, head.last_modified),
        replication_status=head.replication_status,
    )


@dataclass(frozen=True)
class ListedObject:
    """One entry of a ListObjectsV2 page."""

    size_bytes: int
    fingerprint: Fingerprint | None


def verified_fingerprint(
    replica_state: str | None, replica_detail: Mapping[str, Any] | None
) -> Fingerprint | None:
    """The fingerprint of the replica as it was when last verified identical, if it was."""
    detail = replica_detail or {}
    if replica_state != "ok" or not detail.get("etag") or not detail.get("last_modified"):
        return None
    return (str(detail["etag"]), str(detail["last_modified"]))


def still_verified(
    listed: ListedObject | None,
    manifest_listed: bool,
    expected_size: int | None,
    verified: Fingerprint | None,
) -> bool:
    """Whether a listing alone proves the replica unchanged since it was verified identical.

    A replica is written only by the copy (or CRR); a different ETag or last-modified
    time means someone wrote it since, and then its bytes are looked at again.
    """
    return (
        listed is not None
        and manifest_listed
        and verified is not None
        and listed.size_bytes == expected_size
        and listed.fingerprint == verified
    )


def replica_changed(replica: ObjectFacts, verified: Fingerprint | None, source: ObjectFacts | None) -> bool:
    """Whether the replica was written since it was verified, or (crr) is not the source's
    version: CRR gives a replica the source's version id, so another id is another write."""
    if verified is not None and replica.fingerprint is not None and replica.fingerprint != verified:
        return True
    versions = (source.version_id if source else None, replica.version_id)
    return all(version not in {None, "null"} for version in versions) and versions[0] != versions[1]


def needs_reading(replica: ObjectFacts, expected_size: int | None, changed: bool) -> bool:
    """Whether the replica must be read to know its SHA-256: its tag is missing (a copy by
    another tool) or cannot be trusted (the object was rewritten, tags and all)."""
    if not replica.exists or replica.sha256_read:
        return False
    if expected_size is not None and replica.size_bytes != expected_size:
        return False  # already a mismatch; reading would not change the verdict
    return replica.sha256 is None or changed


def lag_severity(age_seconds: float, max_lag_seconds: float) -> Judgement:
    """Pending replication: fine up to max_lag, a warning up to twice that, then critical."""
    if age_seconds <= max_lag_seconds:
        return "ok"
    if age_seconds <= 2 * max_lag_seconds:
        return "warning"
    return "critical"


def human_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


@dataclass(frozen=True)
class Verdict:
    state: ReplicaState
    judgement: Judgement
    reason: str


def judge_backup(
    *,
    mode: ReplicationMode,
    expected_size: int | None,
    expected_sha256: str | None,
    replica: ObjectFacts,
    source: ObjectFacts | None,
    manifest_present: bool | None,
    age_seconds: float,
    max_lag_seconds: float,
    copy_error: str | None = None,
) -> Verdict:
    """The replica state of one backup from what the HEADs showed (see the module's table)."""
    if mode == "crr" and source is not None and source.replication_status == "FAILED":
        return Verdict(
            "failed", "critical", "S3 replication of this object FAILED (source ReplicationStatus)"
        )
    if replica.exists:
        if expected_size is not None and replica.size_bytes != expected_size:
            return Verdict(
                "mismatch",
                "critical",
                f"replica is {replica.size_bytes} bytes, the backup {expected_size} bytes",
            )
        if expected_sha256 and replica.sha256 and replica.sha256 != expected_sha256:
            how = "read from the object" if replica.sha256_read else "from its tag"
            return Verdict(
                "mismatch",
                "critical",
                f"replica SHA-256 {replica.sha256[:12]}… ({how}) differs from the backup's "
                f"{expected_sha256[:12]}…",
            )
        if manifest_present is False:
            return Verdict("missing", "critical", "the replica of the backup's manifest is missing")
        return Verdict("ok", "ok", "replica present, same size and SHA-256")
    age = human_seconds(age_seconds)
    max_lag = human_seconds(max_lag_seconds)
    if mode == "crr":
        status = source.replication_status if source is not None else None
        if status == "PENDING":
            return Verdict(
                "pending",
                lag_severity(age_seconds, max_lag_seconds),
                f"S3 replication PENDING {age} after the backup (max_lag {max_lag})",
            )
        if status is None:
            return Verdict(
                "missing",
                "critical",
                "replica missing; the source has no ReplicationStatus, so no replication rule covers it",
            )
        return Verdict("missing", "critical", f"replica missing (source ReplicationStatus {status})")
    if copy_error:
        return Verdict(
            "missing", "critical", f"replica missing: the copy after the backup failed: {copy_error}"
        )
    if age_seconds <= max_lag_seconds:
        return Verdict("pending", "ok", f"replica not there yet, {age} after the backup (max_lag {max_lag})")
    return Verdict("missing", "critical", f"replica missing {age} after the backup (max_lag {max_lag})")


class Problem(BaseModel):
    """One finding of a check, worded for the operator who reads the alert."""

    check: str
    severity: ProblemSeverity
    detail: str


def region_problems(
    primary_region: str, replica_region: str, primary_location: str | None, replica_location: str | None
) -> list[Problem]:
    """The replica must live in another region than the primary, really, not only in the config."""
    problems: list[Problem] = []
    if replica_region == primary_region:
        problems.append(
            Problem(
                check="replica-region",
                severity="critical",
                detail=(
                    f"storage.replica.region is {replica_region}, the primary's region: "
                    "one regional outage takes both copies"
                ),
            )
        )
    if replica_location is not None and replica_location != replica_region:
        problems.append(
            Problem(
                check="replica-region",
                severity="critical",
                detail=f"the replica bucket is in {replica_location}, not in {replica_region} as configured",
            )
        )
    if (
        replica_region != primary_region
        and primary_location is not None
        and replica_location is not None
        and primary_location == replica_location
    ):
        problems.append(
            Problem(
                check="replica-region",
                severity="critical",
                detail=f"the primary and the replica bucket are both in {replica_location}",
            )
        )
    return problems


def versioning_problem(role: str, bucket: str, status: str | None, mode: ReplicationMode) -> Problem | None:
    if status == "Enabled":
        return None
    why = (
        "S3 replication needs versioning on both buckets"
        if mode == "crr"
        else "a deleted or overwritten copy cannot be recovered"
    )
    return Problem(
        check="versioning",
        severity="critical" if mode == "crr" else "warning",
        detail=f"versioning of the {role} bucket {bucket} is {status or 'not enabled'}: {why}",
    )


def replication_rule_problems(
    rules: list[ReplicationRule] | None, primary_bucket: str, replica_bucket: str, prefix: str
) -> list[Problem]:
    """crr mode: an enabled rule must send every backup under `prefix` to the replica bucket."""
    wanted = {replica_bucket, f"arn:aws:s3:::{replica_bucket}"}
    if rules is None:
        return [
            Problem(
                check="replication-config",
                severity="critical",
                detail=(
                    f"bucket {primary_bucket} has no replication configuration; "
                    f"mode crr needs a rule to {replica_bucket}"
                ),
            )
        ]
    for rule in rules:
        if (
            rule.status == "Enabled"
            and rule.destination in wanted
            and rule.prefix is not None
            and prefix.startswith(rule.prefix)
        ):
            return []
    return [
        Problem(
            check="replication-config",
            severity="critical",
            detail=(
                f"no enabled replication rule of bucket {primary_bucket} sends prefix {prefix!r} "
                f"to {replica_bucket}"
            ),
        )
    ]


def overall_status(judgements: list[Judgement] | list[ProblemSeverity]) -> CheckStatus:
    """Any critical finding makes a `failure`, any warning a `warning`; else `ok`."""
    if "critical" in judgements:
        return "failure"
    if "warning" in judgements:
        return "warning"
    return "ok"


def worst_status(statuses: list[CheckStatus]) -> CheckStatus:
    for status in ("failure", "warning"):
        if status in statuses:
            return status
    return "ok"


# the report ---------------------------------------------------------------------


class ReplicationReport(BaseModel):
    """One replication check of one target: what is stored, returned and alerted on."""

    model_config = ConfigDict(extra="ignore")

    target: str
    checked_at: str
    run_id: str
    status: CheckStatus
    mode: ReplicationMode
    primary_bucket: str
    replica_bucket: str
    replica_region: str
    window_start: str
    checked: int = 0
    # Exact numbers per state (ok, pending, missing, mismatched, failed, unchecked) ...
    counts: dict[str, int] = Field(default_factory=dict)
    # ... and the backup ids, newest first, at most MAX_LISTED each.
    missing: list[str] = Field(default_factory=list)
    mismatched: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    unchecked: list[str] = Field(default_factory=list)
    lag_seconds: float = 0.0
    oldest_unreplicated: str | None = None
    problems: list[Problem] = Field(default_factory=list)
    duration_seconds: float = 0.0

    @property
    def failing_checks(self) -> list[str]:
        return sorted({problem.check for problem in self.problems})


# S3 access ----------------------------------------------------------------------


def _facts(bucket: Bucket, key: str, head: ObjectHead | None) -> ObjectFacts:
    """The facts of a HEADed object, with the tags of the version HEADed."""
    if head is None:
        return object_facts(None)
    return object_facts(head, bucket.tags(key, head.version_id))


def _read_sha256(bucket: Bucket, key: str) -> str:
    digest = hashlib.sha256()
    for chunk in bucket.iter_chunks(key):
        digest.update(chunk)
    return digest.hexdigest()


def _establish_sha256(
    bucket: Bucket,
    key: str,
    replica: ObjectFacts,
    *,
    expected_size: int | None,
    changed: bool,
) -> ObjectFacts:
    if not needs_reading(replica, expected_size, changed):
        return replica
    return replace(replica, sha256=_read_sha256(bucket, key), sha256_read=True)


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


# copy mode ----------------------------------------------------------------------


def _replica_detail(
    replica: ReplicaConfig, checked_at: str, error: str | None, verified: ObjectFacts | None
) -> dict[str, Any]:
    """Where the replica is and when it was checked; for an identical replica, which
    version and fingerprint were verified (so later checks see any rewrite)."""
    detail: dict[str, Any] = {"bucket": replica.bucket, "region": replica.region, "checked_at": checked_at}
    if verified is not None:
        if verified.version_id:
            detail["version_id"] = verified.version_id
        if verified.fingerprint is not None:
            detail["etag"], detail["last_modified"] = verified.fingerprint
    if error:
        detail["error"] = error
    return detail


def replicate_backup(runtime: Runtime, record: BackupRecord) -> BackupRecord:
    """Copy a completed backup (dump and manifest) to the replica bucket and check the copy.

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
        for key in (record.key, record.manifest_key):
            copy_object(source, replica_bucket, key)
        copied = _facts(replica_bucket, record.key, replica_bucket.head(record.key))
        copied = _establish_sha256(
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
        if verdict.state == "ok":
            state, verified = "ok", copied
        elif verdict.state == "mismatch":
            state, error = "mismatch", verdict.reason
        else:
            state, error = "failed", f"the copy is not in s3://{replica.bucket}: {verdict.reason}"
    except StorageError as exc:
        state, error = "failed", str(exc)
    detail = _replica_detail(replica, iso(runtime.clock()), error, verified)
    log = logger.info if state == "ok" else logger.error
    log(
        "replica copy",
        extra={"target": record.target, "backup_id": record.backup_id, "replica": state, "error": error},
    )
    try:
        runtime.catalog.update_backup(
            record.target, record.backup_id, {"replica": state, "replica_detail": detail}
        )
    except (CatalogError, BackupNotFound) as exc:
        # The copy itself is what matters; the hourly check records the state it finds.
        logger.error(
            "recording the replica state failed", extra={"backup_id": record.backup_id, "error": str(exc)}
        )
    return record.model_copy(update={"replica": state, "replica_detail": detail})


# the check ----------------------------------------------------------------------

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


@dataclass(frozen=True)
class BackupCheck:
    backup_id: str
    verdict: Verdict | None  # None: could not be checked
    error: str | None
    age_seconds: float


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
        manifest_listed = self.inventory.get(record.manifest_key) is not None
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
        replica = _facts(self.replica_bucket, record.key, self._replica_head(record.key))
        replica = _establish_sha256(
            self.replica_bucket,
            record.key,
            replica,
            expected_size=record.size_bytes,
            changed=replica_changed(replica, verified, source),
        )
        manifest_present: bool | None = None
        if replica.exists:
            manifest_present = self._replica_head(record.manifest_key) is not None
        detail = record.replica_detail or {}
        copy_error = detail.get("error") if record.replica == "failed" else None
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
        )
        return verdict, replica

    def _record_state(self, record: BackupRecord, verdict: Verdict, replica: ObjectFacts) -> None:
        verified = replica if verdict.state == "ok" else None
        new_fingerprint = verified.fingerprint if verified is not None else None
        old_fingerprint = verified_fingerprint(record.replica, record.replica_detail)
        if verdict.state == record.replica and new_fingerprint == old_fingerprint:
            return
        error = None if verdict.state == "ok" else verdict.reason
        detail = _replica_detail(self.replica, self.checked_at, error, verified)
        try:
            self.runtime.catalog.update_backup(
                record.target, record.backup_id, {"replica": verdict.state, "replica_detail": detail}
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


def _ids(checks: list[BackupCheck]) -> list[str]:
    return [check.backup_id for check in checks[:MAX_LISTED]]


def _listing(checks: list[BackupCheck]) -> str:
    shown = ", ".join(check.backup_id for check in checks[:3])
    more = len(checks) - 3
    return f"{shown} and {more} more" if more > 0 else shown


def summarize(
    checks: list[BackupCheck], bucket_problems: list[Problem], replica: ReplicaConfig
) -> tuple[dict[str, list[BackupCheck]], list[Problem], float, str | None]:
    """Group the per-backup results; the problems an operator reads; the lag and its backup."""
    groups: dict[str, list[BackupCheck]] = {
        name: [] for name in ("ok", "pending", "missing", "mismatched", "failed", "unchecked")
    }
    state_group = {"ok": "ok", "pending": "pending", "missing": "missing", "mismatch": "mismatched"}
    for check in checks:
        if check.verdict is None:
            groups["unchecked"].append(check)
        else:
            groups[state_group.get(check.verdict.state, "failed")].append(check)
    where = f"s3://{replica.bucket} ({replica.region})"
    problems = list(bucket_problems)
    for group, name, wording in (
        ("missing", "replica-missing", f"backup(s) have no replica in {where}"),
        ("mismatched", "replica-mismatch", f"replica(s) in {where} differ from the backup"),
        ("failed", "replication-failed", "backup(s) whose S3 replication FAILED"),
    ):
        found = groups[group]
        if found:
            first = found[0].verdict
            reason = f" (newest: {first.reason})" if first is not None else ""
            problems.append(
                Problem(
                    check=name,
                    severity="critical",
                    detail=f"{len(found)} {wording}: {_listing(found)}{reason}",
                )
            )
    severities: tuple[ProblemSeverity, ...] = ("critical", "warning")
    for severity in severities:
        late = [c for c in groups["pending"] if c.verdict is not None and c.verdict.judgement == severity]
        if late:
            oldest = max(late, key=lambda check: check.age_seconds)
            problems.append(
                Problem(
                    check="replication-lag",
                    severity=severity,
                    detail=(
                        f"{len(late)} backup(s) still not replicated after more than "
                        f"{'twice ' if severity == 'critical' else ''}max_lag "
                        f"({human_seconds(replica.max_lag.total_seconds())}); oldest "
                        f"{oldest.backup_id}, {human_seconds(oldest.age_seconds)}"
                    ),
                )
            )
    if groups["unchecked"]:
        unchecked = groups["unchecked"]
        problems.append(
            Problem(
                check="replica-unchecked",
                severity="critical",
                detail=f"{len(unchecked)} backup(s) could not be checked: {unchecked[0].error}",
            )
        )
    unsafe = [c for c in checks if c.verdict is not None and c.verdict.state != "ok"]
    oldest_unsafe = max(unsafe, key=lambda check: check.age_seconds, default=None)
    lag = round(oldest_unsafe.age_seconds, 1) if oldest_unsafe else 0.0
    return groups, problems, lag, oldest_unsafe.backup_id if oldest_unsafe else None


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
    folders = sorted({_directory(key) for record in backups for key in (record.key, record.manifest_key)})
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


def _emit_metrics(report: ReplicationReport) -> None:
    target = report.target
    counts = report.counts
    observability.put_metric(
        observability.REPLICA_MISSING, "Count", counts.get("missing", 0) + counts.get("failed", 0), target
    )
    observability.put_metric(observability.REPLICA_MISMATCH, "Count", counts.get("mismatched", 0), target)
    observability.put_metric(observability.REPLICATION_LAG_SECONDS, "Seconds", report.lag_seconds, target)


def _save(runtime: Runtime, report: ReplicationReport) -> None:
    checks = runtime.catalog.replication_checks
    checks.save(report.target, report.checked_at, report.run_id, report.model_dump())


def notice_for(report: ReplicationReport) -> RunNotice:
    severity = NOTICE_SEVERITY[report.status]
    counts = report.counts
    where = f"s3://{report.replica_bucket} ({report.replica_region})"
    if report.status == "ok":
        summary = f"replication of {report.target}: {report.checked} backup(s) checked in {where}, all safe"
        if counts.get("pending"):
            summary += f" ({counts['pending']} still being copied, within max_lag)"
    else:
        summary = (
            f"replication of {report.target} ({report.status}): {report.checked} checked, "
            f"{counts.get('missing', 0)} missing, {counts.get('mismatched', 0)} mismatched, "
            f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending; "
            f"lag {human_seconds(report.lag_seconds)}"
        )
    return RunNotice(
        source="replication-check",
        target=report.target,
        severity=severity,
        status=report.status,
        summary=summary,
        details={
            "mode": report.mode,
            "replica": where,
            "window_start": report.window_start,
            "checked": report.checked,
            "counts": counts,
            "missing": report.missing[:20],
            "mismatched": report.mismatched[:20],
            "failed": report.failed[:20],
            "lag_seconds": report.lag_seconds,
            "oldest_unreplicated": report.oldest_unreplicated,
            "problems": [problem.model_dump() for problem in report.problems],
        },
        run_id=report.run_id,
    )


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
        missing=_ids(groups["missing"]),
        mismatched=_ids(groups["mismatched"]),
        pending=_ids(groups["pending"]),
        failed=_ids(groups["failed"]),
        unchecked=_ids(groups["unchecked"]),
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
    _emit_metrics(report)
    log = logger.info if report.status == "ok" else logger.warning
    log(
        "replication check",
        extra={"target": target, "status": report.status, "counts": report.counts, "lag_seconds": lag},
    )
    if runtime.notifier is not None:
        runtime.notifier.send(notice_for(report), failing_checks=report.failing_checks)
    return report


def latest_replication_check(runtime: Runtime, target: str) -> ReplicationReport | None:
    """The newest replication check of a target (for `drsentry status`), or None."""
    fields = runtime.catalog.replication_checks.latest(target)
    return ReplicationReport.model_validate(fields) if fields is not None else None


class ReplicationCheckResult(RunResult[ReplicationReport]):
    records_key: ClassVar[str] = "reports"

    @property
    def status(self) -> CheckStatus | Literal["not-configured"]:
        """The worst status of the reports; `not-configured` when there was nothing to check."""
        if not self.records and self.not_configured:
            return "not-configured"
        statuses = [report.status for report in self.records]
        if self.not_run:
            statuses.append("failure")  # a target that could not be checked is not known to be safe
        return worst_status(statuses)

    def document(self) -> dict[str, Any]:
        return {**super().document(), "status": self.status}


def run_scheduled_replication_check(runtime: Runtime, scheduled: ScheduledEvent) -> ReplicationCheckResult:
    """The replication-check function's whole job for one scheduled event (Lambda and CLI)."""

    def no_replica(_target: TargetConfig) -> str | None:
        # Deployed without a replica: nothing to check, and not an error every hour.
        return None if runtime.config.storage.replica else "storage.replica is not configured"

    return run_for_targets(
        runtime,
        "replication-check",
        scheduled,
        lambda target: [check_replication(runtime, target.name)],
        result_type=ReplicationCheckResult,
        not_configured=no_replica,
    )
