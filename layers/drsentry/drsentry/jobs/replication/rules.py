"""The pure rules of replication: how the HEADs of a backup's replica (and, in crr mode,
of its source) are judged, how late is too late, and which bucket settings are problems.
No I/O: the check and ``drsentry check`` feed them what S3 said.

``judge_backup``, a pure function of the HEAD responses:

===========================================  ==========  ============================
what the HEADs show                          state       severity
===========================================  ==========  ============================
crr: source ``ReplicationStatus`` FAILED     failed      critical
replica present, size differs                mismatch    critical
replica present, SHA-256 differs             mismatch    critical
replica present, manifest copy absent        missing     critical
replica present and identical                ok          ok
absent, but seen before (ok / mismatch)      missing     critical (deleted: at once)
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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from drsentry.adapters.buckets import SHA256_TAG, ObjectHead, ReplicationRule
from drsentry.core.config import ReplicaConfig
from drsentry.core.records import ClusterGlobals, ReplicaDetail, iso
from drsentry.core.units import human_seconds

ReplicaState = Literal["pending", "ok", "failed", "mismatch", "missing"]
# States in which the replica was found (or judged missing: seen and gone, or past max_lag),
# so that its absence can no longer mean "not copied yet".
SEEN_STATES: frozenset[str | None] = frozenset({"ok", "mismatch", "missing"})
Judgement = Literal["ok", "warning", "critical"]
ProblemSeverity = Literal["critical", "warning"]
CheckStatus = Literal["ok", "warning", "failure"]
ReplicationMode = Literal["copy", "crr"]
# (ETag without quotes, last-modified as ISO 8601 to the second)
Fingerprint = tuple[str, str]


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
    replica_state: str | None, replica_detail: ReplicaDetail | None
) -> Fingerprint | None:
    """The fingerprint of the replica as it was when last verified identical, if it was."""
    if replica_state != "ok" or replica_detail is None:
        return None
    if not replica_detail.etag or not replica_detail.last_modified:
        return None
    return (replica_detail.etag, replica_detail.last_modified)


def replica_detail(
    replica: ReplicaConfig, checked_at: str, error: str | None, verified: ObjectFacts | None
) -> ReplicaDetail:
    """Where the replica is and when it was checked; for an identical replica, which
    version and fingerprint were verified (so later checks see any rewrite)."""
    detail = ReplicaDetail(
        bucket=replica.bucket, region=replica.region, checked_at=checked_at, error=error or None
    )
    if verified is None:
        return detail
    etag, last_modified = verified.fingerprint or (None, None)
    return detail.model_copy(
        update={"version_id": verified.version_id or None, "etag": etag, "last_modified": last_modified}
    )


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
    seen_before: bool = False,
) -> Verdict:
    """The replica state of one backup from what the HEADs showed (see the table above).

    `seen_before`: an earlier check or the copy found the replica (ok or mismatched). Only a
    replica never seen yet may be pending: one seen and now gone was deleted, which is what an
    attacker does first, so it is missing at once, whatever max_lag allows a new copy."""
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
    if seen_before:
        return Verdict("missing", "critical", "replica gone: an earlier check found it, now it is not there")
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


def judge_globals(expected: ClusterGlobals | None, replica: ObjectFacts | None) -> Verdict | None:
    """What is wrong with the replica of a backup's roles object, or None when nothing is (or
    the backup has none: taken before roles were backed up). `replica` None: not looked at."""
    if expected is None or replica is None:
        return None
    if not replica.exists:
        return Verdict("missing", "critical", "the replica of the backup's roles object is missing")
    if replica.size_bytes != expected.size_bytes or (replica.sha256 and replica.sha256 != expected.sha256):
        return Verdict(
            "mismatch", "critical", "the replica of the backup's roles object differs from the backup's"
        )
    return None


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
