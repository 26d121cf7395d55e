"""Pure rules of the replication check: how HEAD responses, lag and bucket settings are judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drsentry.adapters.buckets import ObjectHead, ReplicationRule, bucket_region, regional_kms_key
from drsentry.core.config import ReplicaConfig
from drsentry.core.errors import StorageError
from drsentry.core.records import ClusterGlobals, ReplicaDetail
from drsentry.jobs.replication.report import (
    MAX_LISTED,
    BackupCheck,
    ReplicationReport,
    notice_for,
    summarize,
)
from drsentry.jobs.replication.rules import (
    ListedObject,
    ObjectFacts,
    Problem,
    Verdict,
    fingerprint_of,
    judge_backup,
    judge_globals,
    lag_severity,
    needs_reading,
    object_facts,
    overall_status,
    region_problems,
    replica_changed,
    replica_detail,
    replication_rule_problems,
    still_verified,
    verified_fingerprint,
    versioning_problem,
)

SHA = "a" * 64
OTHER_SHA = "b" * 64
MAX_LAG = 15 * 60.0
REPLICA = ReplicaConfig(
    bucket="acme-dr-replica", region="eu-west-1", mode="crr", max_lag=timedelta(minutes=15)
)


Headed = tuple[ObjectHead, dict[str, str]]


def head(size: int = 100, sha256: str | None = SHA, **extra: Any) -> Headed:
    """A HEAD response as boto3 returns it (read by the bucket adapter), and the object's tags."""
    tags = {"sha256": sha256, "size-bytes": str(size)} if sha256 else {}
    response = {"ContentLength": size, "Metadata": {"backup-id": "b1"}, "VersionId": "v1", **extra}
    return ObjectHead.from_s3("backups/app/b1.dump", response), tags


def judge(
    replica: Headed | None,
    *,
    mode: str = "copy",
    source: Headed | None = None,
    age: float = 3600.0,
    manifest_present: bool | None = True,
    copy_error: str | None = None,
    seen_before: bool = False,
) -> Verdict:
    return judge_backup(
        mode=mode,  # type: ignore[arg-type]
        expected_size=100,
        expected_sha256=SHA,
        replica=object_facts(*replica) if replica else object_facts(None),
        source=object_facts(*source) if source and mode == "crr" else None,
        manifest_present=manifest_present if replica is not None else None,
        age_seconds=age,
        max_lag_seconds=MAX_LAG,
        copy_error=copy_error,
        seen_before=seen_before,
    )


# lag ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        (0, "ok"),
        (MAX_LAG, "ok"),
        (MAX_LAG + 1, "warning"),
        (2 * MAX_LAG, "warning"),
        (2 * MAX_LAG + 1, "critical"),
    ],
)
def test_lag_is_fine_up_to_max_lag_a_warning_up_to_twice_then_critical(age: float, expected: str) -> None:
    assert lag_severity(age, MAX_LAG) == expected


@given(st.floats(0, 1e6), st.floats(0, 1e6), st.floats(1, 1e5))
def test_lag_severity_never_decreases_with_age(first: float, second: float, max_lag: float) -> None:
    order = ["ok", "warning", "critical"]
    younger, older = sorted((first, second))
    assert order.index(lag_severity(younger, max_lag)) <= order.index(lag_severity(older, max_lag))


# a HEAD response, judged ----------------------------------------------------------


def test_head_response_facts() -> None:
    facts = object_facts(*head(ReplicationStatus="PENDING"))
    assert facts == ObjectFacts(
        exists=True, size_bytes=100, sha256=SHA, version_id="v1", replication_status="PENDING"
    )
    assert object_facts(None) == ObjectFacts(exists=False)


@pytest.mark.parametrize("replica", [None, head()], ids=["replica-absent", "replica-present"])
def test_crr_source_replication_status_failed_is_critical(replica: Headed | None) -> None:
    verdict = judge(replica, mode="crr", source=head(ReplicationStatus="FAILED"), age=1.0)
    assert (verdict.state, verdict.judgement) == ("failed", "critical")


@pytest.mark.parametrize(
    ("age", "judgement"), [(60.0, "ok"), (20 * 60.0, "warning"), (45 * 60.0, "critical")]
)
def test_crr_pending_is_judged_by_its_lag(age: float, judgement: str) -> None:
    verdict = judge(None, mode="crr", source=head(ReplicationStatus="PENDING"), age=age)
    assert (verdict.state, verdict.judgement) == ("pending", judgement)


@pytest.mark.parametrize(
    ("mode", "source"),
    [
        ("copy", None),
        ("crr", head(ReplicationStatus="PENDING")),
        ("crr", head(ReplicationStatus="COMPLETED")),
    ],
    ids=["copy", "crr-pending", "crr-completed"],
)
def test_a_replica_seen_before_and_now_gone_is_missing_at_once(mode: str, source: Headed | None) -> None:
    # A minute after the backup, well inside max_lag: never seen would be pending, seen is deleted.
    never_seen = judge(None, mode=mode, source=source, age=60.0)
    seen = judge(None, mode=mode, source=source, age=60.0, seen_before=True)
    assert never_seen.state in {"pending", "missing"}
    assert (seen.state, seen.judgement) == ("missing", "critical")
    assert "an earlier check found it" in seen.reason


def test_a_replica_seen_before_and_still_there_is_judged_as_ever() -> None:
    assert judge(head(), age=60.0, seen_before=True).state == "ok"
    assert judge(head(size=99), age=60.0, seen_before=True).state == "mismatch"


@pytest.mark.parametrize("status", ["COMPLETED", None])
def test_crr_absent_replica_that_is_not_pending_is_missing(status: str | None) -> None:
    source = head(ReplicationStatus=status) if status else head()
    verdict = judge(None, mode="crr", source=source, age=10.0)
    assert (verdict.state, verdict.judgement) == ("missing", "critical")
    if status is None:
        assert "no replication rule covers it" in verdict.reason


def test_crr_completed_and_identical_is_ok() -> None:
    verdict = judge(head(ReplicationStatus="REPLICA"), mode="crr", source=head(ReplicationStatus="COMPLETED"))
    assert verdict == Verdict("ok", "ok", "replica present, same size and SHA-256")


@pytest.mark.parametrize(
    ("replica", "reason"),
    [
        (head(size=99), "replica is 99 bytes, the backup 100 bytes"),
        (head(sha256=OTHER_SHA), "differs from the backup's"),
    ],
    ids=["size", "sha256"],
)
def test_a_different_replica_is_a_mismatch(replica: Headed, reason: str) -> None:
    verdict = judge(replica)
    assert (verdict.state, verdict.judgement) == ("mismatch", "critical")
    assert reason in verdict.reason


def test_a_replica_without_its_manifest_is_missing() -> None:
    verdict = judge(head(), manifest_present=False)
    assert (verdict.state, verdict.judgement) == ("missing", "critical")
    assert "manifest" in verdict.reason


@pytest.mark.parametrize(
    ("age", "copy_error", "state", "judgement"),
    [
        (60.0, None, "pending", "ok"),  # the backup's copy may still be running
        (MAX_LAG + 1, None, "missing", "critical"),
        (60.0, "NoSuchBucket", "missing", "critical"),  # a failed copy is not waited for
    ],
)
def test_copy_mode_absent_replica(age: float, copy_error: str | None, state: str, judgement: str) -> None:
    verdict = judge(None, age=age, copy_error=copy_error)
    assert (verdict.state, verdict.judgement) == (state, judgement)
    if copy_error:
        assert copy_error in verdict.reason


@pytest.mark.parametrize(
    ("facts", "changed", "expected"),
    [
        (ObjectFacts(True, 100, SHA), False, False),  # tag of an unchanged replica
        (ObjectFacts(True, 100, None), False, True),  # no tag
        (ObjectFacts(True, 100, SHA), True, True),  # rewritten since verified: the tag may lie
        (ObjectFacts(True, 99, None), True, False),  # size already differs
        (ObjectFacts(False), True, False),
        (ObjectFacts(True, 100, SHA, sha256_read=True), True, False),
    ],
)
def test_when_a_replica_must_be_read(facts: ObjectFacts, changed: bool, expected: bool) -> None:
    assert needs_reading(facts, 100, changed) is expected


VERIFIED = ("etag-1", "2026-11-22T18:00:00Z")


@pytest.mark.parametrize(
    ("replica", "source_version", "changed"),
    [
        (ObjectFacts(True, fingerprint=VERIFIED, version_id="v1"), None, False),
        (ObjectFacts(True, fingerprint=("etag-2", VERIFIED[1]), version_id="v1"), None, True),
        (ObjectFacts(True, fingerprint=(VERIFIED[0], "2026-11-22T19:00:00Z")), None, True),
        (ObjectFacts(True, fingerprint=VERIFIED, version_id="v1"), "v1", False),  # crr keeps version ids
        (ObjectFacts(True, fingerprint=VERIFIED, version_id="v2"), "v1", True),
        (ObjectFacts(True, fingerprint=VERIFIED, version_id="null"), "v1", False),  # unversioned: no say
    ],
)
def test_when_a_replica_was_rewritten(
    replica: ObjectFacts, source_version: str | None, changed: bool
) -> None:
    source = ObjectFacts(True, version_id=source_version) if source_version else None
    assert replica_changed(replica, VERIFIED, source) is changed


def test_head_and_list_fingerprints_agree() -> None:

    listed = fingerprint_of('"abc"', datetime(2026, 11, 22, 18, 0, 0, 734000, tzinfo=UTC))
    headed = object_facts(*head(ETag='"abc"', LastModified=datetime(2026, 11, 22, 18, 0, 0, tzinfo=UTC)))
    assert listed == headed.fingerprint == ("abc", "2026-11-22T18:00:00Z")


@pytest.mark.parametrize(
    ("listed", "manifest_listed", "state", "expected"),
    [
        (ListedObject(100, VERIFIED), True, "ok", True),
        (ListedObject(100, VERIFIED), False, "ok", False),  # manifest gone
        (ListedObject(100, ("etag-2", VERIFIED[1])), True, "ok", False),  # rewritten
        (ListedObject(99, VERIFIED), True, "ok", False),
        (None, True, "ok", False),  # deleted
        (ListedObject(100, VERIFIED), True, "missing", False),  # never vouched for
    ],
)
def test_a_listing_vouches_only_for_an_unchanged_verified_replica(
    listed: ListedObject | None, manifest_listed: bool, state: str, expected: bool
) -> None:
    detail = ReplicaDetail(etag=VERIFIED[0], last_modified=VERIFIED[1])
    verified = verified_fingerprint(state, detail)
    assert still_verified(listed, manifest_listed, 100, verified) is expected


def test_the_replica_detail_holds_what_was_verified_or_why_not_and_nothing_else() -> None:
    # Given an identical replica, and a copy that failed
    identical = ObjectFacts(True, 100, SHA, version_id="v1", fingerprint=VERIFIED)
    checked_at = "2026-11-22T12:00:00Z"

    # When their replica details are made
    ok = replica_detail(REPLICA, checked_at, None, identical)
    failed = replica_detail(REPLICA, checked_at, "s3://acme-dr-replica: NoSuchBucket", None)

    # Then each is stored with only the fields it knows, as catalogs have always held them
    where = {"bucket": "acme-dr-replica", "region": "eu-west-1", "checked_at": checked_at}
    assert ok.model_dump() == {**where, "version_id": "v1", "etag": VERIFIED[0], "last_modified": VERIFIED[1]}
    assert failed.model_dump() == {**where, "error": "s3://acme-dr-replica: NoSuchBucket"}
    # And the next check recognises the fingerprint it verified, and only that one
    assert verified_fingerprint("ok", ok) == VERIFIED
    assert verified_fingerprint("failed", failed) is None


# bucket settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "region"), [(None, "us-east-1"), ("", "us-east-1"), ("EU", "eu-west-1")]
)
def test_bucket_location_as_region(constraint: str | None, region: str) -> None:
    assert bucket_region(constraint) == region


def test_regions_must_differ_in_config_and_in_fact() -> None:
    assert region_problems("us-east-1", "eu-west-1", "us-east-1", "eu-west-1") == []
    same = region_problems("us-east-1", "us-east-1", "us-east-1", "us-east-1")
    assert [p.check for p in same] == ["replica-region"]
    moved = region_problems("us-east-1", "eu-west-1", "us-east-1", "us-east-1")
    assert {p.severity for p in moved} == {"critical"}
    assert any("not in eu-west-1 as configured" in p.detail for p in moved)
    assert any("both in us-east-1" in p.detail for p in moved)


@pytest.mark.parametrize(
    ("status", "mode", "severity"),
    [
        ("Enabled", "crr", None),
        (None, "crr", "critical"),
        ("Suspended", "crr", "critical"),
        (None, "copy", "warning"),
    ],
)
def test_versioning(status: str | None, mode: str, severity: str | None) -> None:
    problem = versioning_problem("replica", "acme-dr-replica", status, mode)  # type: ignore[arg-type]
    assert (problem.severity if problem else None) == severity


def rule(**overrides: Any) -> dict[str, Any]:
    return {
        "ID": "backups",
        "Status": "Enabled",
        "Filter": {"Prefix": "backups/"},
        "Destination": {"Bucket": "arn:aws:s3:::acme-dr-replica"},
        **overrides,
    }


@pytest.mark.parametrize(
    ("rules", "covered"),
    [
        ([rule()], True),
        ([rule(Filter={})], True),  # the whole bucket
        ([rule(Filter={"And": {"Prefix": "backups/"}})], True),
        ([{"ID": "legacy", "Status": "Enabled", "Prefix": "", "Destination": rule()["Destination"]}], True),
        ([rule(Status="Disabled")], False),
        ([rule(Destination={"Bucket": "arn:aws:s3:::somewhere-else"})], False),
        ([rule(Filter={"Prefix": "logs/"})], False),
        ([rule(Filter={"Tag": {"Key": "replicate", "Value": "yes"}})], False),  # backups carry no tags
        ([rule(Status="Disabled"), rule()], True),
    ],
)
def test_crr_needs_an_enabled_rule_to_the_replica_covering_the_prefix(
    rules: list[dict[str, Any]], covered: bool
) -> None:
    parsed = [ReplicationRule.from_s3(rule) for rule in rules]
    problems = replication_rule_problems(parsed, "acme-dr-backups", "acme-dr-replica", "backups/")
    assert (problems == []) is covered


def test_crr_without_replication_configuration() -> None:
    [problem] = replication_rule_problems(None, "acme-dr-backups", "acme-dr-replica", "backups/")
    assert (problem.check, problem.severity) == ("replication-config", "critical")


@pytest.mark.parametrize(
    ("kms_key", "expected"),
    [
        (None, None),
        ("alias/acme-dr", "alias/acme-dr"),  # aliases resolve in the replica's region
        ("arn:aws:kms:eu-west-1:123456789012:key/1234", "arn:aws:kms:eu-west-1:123456789012:key/1234"),
        (
            "arn:aws:kms:us-east-1:123456789012:key/mrk-1234",
            "arn:aws:kms:eu-west-1:123456789012:key/mrk-1234",
        ),
    ],
)
def test_kms_key_for_the_replica_region(kms_key: str | None, expected: str | None) -> None:
    assert regional_kms_key(kms_key, "eu-west-1") == expected


def test_single_region_kms_key_of_another_region_is_refused() -> None:
    with pytest.raises(StorageError, match="multi-Region key"):
        regional_kms_key("arn:aws:kms:us-east-1:123456789012:key/1234", "eu-west-1")


# the report ---------------------------------------------------------------------


def check(backup_id: str, state: str, judgement: str = "critical", age: float = 60.0) -> BackupCheck:
    return BackupCheck(backup_id, Verdict(state, judgement, "why"), None, age)  # type: ignore[arg-type]


def test_lag_is_the_age_of_the_oldest_backup_not_safely_replicated() -> None:
    checks = [
        check("new", "pending", "ok", age=60.0),
        check("mid", "missing", age=600.0),
        check("old", "ok", "ok", age=9000.0),
    ]
    groups, problems, lag, oldest = summarize(checks, [], REPLICA)
    assert (lag, oldest) == (600.0, "mid")
    assert [c.backup_id for c in groups["missing"]] == ["mid"]
    assert [p.check for p in problems] == ["replica-missing"]
    assert overall_status([p.severity for p in problems]) == "failure"


def test_all_replicated_means_no_lag_and_ok() -> None:
    _, problems, lag, oldest = summarize([check("a", "ok", "ok"), check("b", "ok", "ok")], [], REPLICA)
    assert (problems, lag, oldest) == ([], 0.0, None)
    assert overall_status([]) == "ok"


def test_unchecked_backups_are_critical_but_not_missing() -> None:
    unchecked = BackupCheck("a", None, "s3://b/k: HEAD failed: AccessDenied", 60.0)
    groups, problems, lag, _ = summarize([unchecked], [], REPLICA)
    assert [c.backup_id for c in groups["unchecked"]] == ["a"] and groups["missing"] == []
    assert [(p.check, p.severity) for p in problems] == [("replica-unchecked", "critical")]
    assert "AccessDenied" in problems[0].detail
    assert lag == 0.0


def test_a_warning_only_check_is_a_warning() -> None:
    bucket = [Problem(check="versioning", severity="warning", detail="suspended")]
    _, problems, _, _ = summarize([check("a", "ok", "ok")], bucket, REPLICA)
    assert overall_status([p.severity for p in problems]) == "warning"


def test_notice_severity_follows_the_status() -> None:
    base: dict[str, Any] = {
        "target": "app",
        "checked_at": "2026-11-22T18:00:00Z",
        "run_id": "r1",
        "mode": "copy",
        "primary_bucket": "p",
        "replica_bucket": "r",
        "replica_region": "eu-west-1",
        "window_start": "2026-11-15T18:00:00Z",
        "missing": [f"id{i}" for i in range(MAX_LISTED)],
    }
    for status, severity in (("ok", "info"), ("warning", "warning"), ("failure", "critical")):
        notice = notice_for(ReplicationReport(status=status, **base))
        assert (notice.source, notice.severity, notice.status) == ("replication-check", severity, status)
        assert len(notice.details["missing"]) == 20  # an alert lists a few; the record keeps more


# the roles object's replica ----------------------------------------------------------------


def _roles_object() -> ClusterGlobals:
    return ClusterGlobals(key="b/app/x.globals.sql", sha256="ab" * 32, size_bytes=120, role_passwords=False)


def test_a_missing_roles_object_replica_makes_the_backup_missing() -> None:
    verdict = judge_globals(_roles_object(), ObjectFacts(exists=False))
    assert verdict is not None
    assert (verdict.state, verdict.judgement) == ("missing", "critical")


def test_a_roles_object_replica_with_other_bytes_is_a_mismatch() -> None:
    verdict = judge_globals(_roles_object(), ObjectFacts(exists=True, size_bytes=120, sha256="cd" * 32))
    assert verdict is not None
    assert verdict.state == "mismatch"


def test_an_identical_roles_object_replica_and_a_backup_without_one_are_fine() -> None:
    assert judge_globals(_roles_object(), ObjectFacts(exists=True, size_bytes=120, sha256="ab" * 32)) is None
    assert judge_globals(None, ObjectFacts(exists=False)) is None
