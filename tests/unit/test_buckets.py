"""The bucket adapter: typed answers from S3, and what each S3 error becomes.

moto's in-process `mock_aws` plays S3 for what it implements (versions, tags, Object Lock,
legal holds, archive storage classes, restores); a botocore Stubber answers with the
codes moto never sends (a 403 HEAD, RestoreAlreadyInProgress, a throttled listing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from drsentry.adapters.aws import AwsClients
from drsentry.adapters.buckets import (
    Bucket,
    Buckets,
    CopyParts,
    MiB,
    ObjectEntry,
    ObjectHead,
    VersionEntry,
)
from drsentry.core.errors import (
    BucketNotFound,
    DeleteRefused,
    ObjectArchived,
    RestoreInProgress,
    StorageError,
)

PRIMARY = "us-east-1"
REPLICA = "eu-west-1"


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsClients]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield AwsClients(PRIMARY)


@pytest.fixture
def buckets(clients: AwsClients) -> Buckets:
    return Buckets(clients)


def make_bucket(
    clients: AwsClients, name: str, *, region: str = PRIMARY, versioned: bool = True, lock: bool = False
) -> None:
    s3 = clients.s3(region)
    request: dict[str, Any] = {"Bucket": name}
    if region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if lock:
        request["ObjectLockEnabledForBucket"] = True
    s3.create_bucket(**request)
    if versioned and not lock:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})


def stubbed(name: str = "stubbed-bucket") -> tuple[Bucket, Stubber]:
    """A bucket whose client answers only what the test tells its Stubber."""
    s3 = boto3.session.Session().client(
        "s3", region_name=PRIMARY, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return Bucket(s3, name), Stubber(s3)


# typed answers ----------------------------------------------------------------------------


def test_head_is_typed_and_a_missing_object_is_none(clients: AwsClients, buckets: Buckets) -> None:
    # Given an object written with metadata and a content type
    make_bucket(clients, "primary")
    clients.s3().put_object(
        Bucket="primary", Key="b/1.dump", Body=b"x" * 10, Metadata={"backup-id": "b1"}, ContentType="a/b"
    )
    bucket = buckets.bucket("primary")

    # When it is HEADed, and a key that was never written
    head = bucket.head("b/1.dump")

    # Then the facts are typed (STANDARD when S3 leaves the class out), and absence is None
    assert head is not None
    assert (head.key, head.size_bytes, head.storage_class, head.content_type) == (
        "b/1.dump",
        10,
        "STANDARD",
        "a/b",
    )
    assert head.etag == hashlib.md5(b"x" * 10).hexdigest()  # without S3's quotes
    assert dict(head.metadata) == {"backup-id": "b1"}
    assert head.version_id and head.version_id != "null"
    assert head.restore is None and head.retention_mode is None
    assert bucket.head("b/never-written.dump") is None


def test_a_version_that_is_a_delete_marker_heads_as_no_object(clients: AwsClients, buckets: Buckets) -> None:
    make_bucket(clients, "primary")
    s3 = clients.s3()
    s3.put_object(Bucket="primary", Key="k", Body=b"v1")
    marker = s3.delete_object(Bucket="primary", Key="k")["VersionId"]

    bucket = buckets.bucket("primary")

    assert bucket.head("k") is None
    assert bucket.head("k", marker) is None


def test_listings_are_typed_and_in_key_order_with_delete_markers(
    clients: AwsClients, buckets: Buckets
) -> None:
    # Given two keys, one overwritten and one deleted (a delete marker on top)
    make_bucket(clients, "primary")
    s3 = clients.s3()
    for key, body in (("a", b"1"), ("a", b"22"), ("b", b"333")):
        s3.put_object(Bucket="primary", Key=key, Body=body)
    s3.delete_object(Bucket="primary", Key="b")
    bucket = buckets.bucket("primary")

    # When the objects and the versions are listed
    objects = list(bucket.iter_objects(""))
    versions = list(bucket.iter_versions(""))

    # Then the current objects are `a` only, and the versions say which is latest and which a marker
    assert [(entry.key, entry.size_bytes) for entry in objects] == [("a", 2)]
    assert isinstance(objects[0], ObjectEntry) and objects[0].etag == hashlib.md5(b"22").hexdigest()
    assert all(isinstance(entry, VersionEntry) for entry in versions)
    assert [(v.key, v.size_bytes, v.is_latest, v.delete_marker) for v in versions if not v.delete_marker] == [
        ("a", 2, True, False),
        ("a", 1, False, False),
        ("b", 3, False, False),
    ]
    [marker] = [v for v in versions if v.delete_marker]
    assert (marker.key, marker.is_latest) == ("b", True)
    assert [v.key for v in versions] == sorted(v.key for v in versions)


def test_bucket_facts(clients: AwsClients, buckets: Buckets) -> None:
    make_bucket(clients, "primary")
    make_bucket(clients, "replica", region=REPLICA, versioned=False)
    make_bucket(clients, "archive", lock=True)

    assert buckets.bucket("primary").location() == PRIMARY
    assert buckets.bucket("replica", REPLICA).location() == REPLICA
    assert buckets.bucket("primary").versioning() == "Enabled"
    assert buckets.bucket("replica", REPLICA).versioning() is None
    assert buckets.bucket("archive").object_lock_enabled() is True
    assert buckets.bucket("primary").object_lock_enabled() is False
    assert buckets.bucket("primary").replication_rules() is None


def test_replication_rules_are_read_as_typed_rules() -> None:
    # (moto drops a rule's filter prefix: S3's own answer comes from a Stubber)
    bucket, stubber = stubbed("primary")
    destination = {"Bucket": "arn:aws:s3:::replica"}
    stubber.add_response(
        "get_bucket_replication",
        {
            "ReplicationConfiguration": {
                "Role": "arn:aws:iam::123456789012:role/replication",
                "Rules": [
                    {
                        "ID": "backups",
                        "Status": "Enabled",
                        "Filter": {"Prefix": "backups/"},
                        "Destination": destination,
                    },
                    {"ID": "legacy", "Status": "Disabled", "Prefix": "old/", "Destination": destination},
                    {
                        "ID": "tagged",
                        "Status": "Enabled",
                        "Filter": {"And": {"Prefix": "x/", "Tags": [{"Key": "k", "Value": "v"}]}},
                        "Destination": destination,
                    },
                ],
            }
        },
    )

    with stubber:
        rules = bucket.replication_rules() or []

    assert [(rule.status, rule.destination, rule.prefix) for rule in rules] == [
        ("Enabled", "arn:aws:s3:::replica", "backups/"),
        ("Disabled", "arn:aws:s3:::replica", "old/"),
        ("Enabled", "arn:aws:s3:::replica", None),  # narrowed by tags, which backups never carry
    ]


def test_a_bucket_that_does_not_exist_is_bucket_not_found(buckets: Buckets) -> None:
    nowhere = buckets.bucket("nobody-made-this-bucket")
    for fact in (
        nowhere.location,
        nowhere.versioning,
        nowhere.object_lock_enabled,
        nowhere.replication_rules,
    ):
        with pytest.raises(
            BucketNotFound, match=r"^s3://nobody-made-this-bucket: reading its .* NoSuchBucket"
        ):
            fact()


def test_each_bucket_uses_the_shared_client_of_its_region(clients: AwsClients, buckets: Buckets) -> None:
    # (hooks registered on AwsClients' client, as the crr tests do, must see the adapter's requests)
    assert buckets.bucket("replica", REPLICA).s3 is clients.s3(REPLICA)
    assert buckets.bucket("primary").s3 is clients.s3(PRIMARY)
    assert buckets.bucket("replica", REPLICA).region == REPLICA


# copies, tags, locks ------------------------------------------------------------------------


def test_a_copy_to_another_region_carries_metadata_tags_and_class(
    clients: AwsClients, buckets: Buckets
) -> None:
    # Given a tagged object, overwritten since the version that was checked
    make_bucket(clients, "primary")
    make_bucket(clients, "replica", region=REPLICA)
    s3 = clients.s3()
    s3.put_object(
        Bucket="primary", Key="k", Body=b"checked", Metadata={"backup-id": "b1"}, Tagging="sha256=abc"
    )
    primary = buckets.bucket("primary")
    checked = primary.head("k")
    assert checked is not None
    s3.put_object(Bucket="primary", Key="k", Body=b"a later write")
    replica = buckets.bucket("replica", REPLICA)

    # When exactly the checked version is copied, with its tags passed explicitly
    replica.copy_in(
        primary,
        checked,
        storage_class="STANDARD_IA",
        metadata=checked.metadata,
        tags=primary.tags("k", checked.version_id),
        parts=CopyParts(threshold=5 * MiB, part_size=5 * MiB),
    )

    # Then the replica holds that version's bytes, metadata and tags, in the class asked for
    copy = replica.head("k")
    assert copy is not None
    assert (copy.size_bytes, copy.storage_class, dict(copy.metadata)) == (
        7,
        "STANDARD_IA",
        {"backup-id": "b1"},
    )
    assert replica.tags("k") == {"sha256": "abc"}
    assert b"".join(replica.iter_chunks("k")) == b"checked"


def test_retention_is_put_on_a_version_and_read_back(clients: AwsClients, buckets: Buckets) -> None:
    make_bucket(clients, "archive", lock=True)
    clients.s3().put_object(Bucket="archive", Key="k", Body=b"dump")
    archive = buckets.bucket("archive")
    version = (archive.head("k") or ObjectHead("k", 0)).version_id
    until = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)

    archive.put_retention("k", version, mode="GOVERNANCE", until=until)

    head = archive.head("k", version)
    assert head is not None
    assert head.retention_mode == "GOVERNANCE"
    assert head.retain_until is not None and abs((head.retain_until - until).total_seconds()) <= 1


def test_tags_of_a_missing_object_are_a_storage_error_naming_it(
    clients: AwsClients, buckets: Buckets
) -> None:
    make_bucket(clients, "primary")
    with pytest.raises(StorageError, match=r"^s3://primary/absent: reading its tags failed: NoSuchKey"):
        buckets.bucket("primary").tags("absent")


def test_json_documents_round_trip_and_garbage_is_named(clients: AwsClients, buckets: Buckets) -> None:
    make_bucket(clients, "primary")
    bucket = buckets.bucket("primary")
    bucket.put_json("m.json", {"backup_id": "b1", "sha256": "abc"})
    clients.s3().put_object(Bucket="primary", Key="bad.json", Body=b"{not json")

    assert bucket.get_json("m.json") == {"backup_id": "b1", "sha256": "abc"}
    assert clients.s3().head_object(Bucket="primary", Key="m.json")["ServerSideEncryption"] == "AES256"
    with pytest.raises(StorageError, match=r"^s3://primary/bad.json: not valid JSON"):
        bucket.get_json("bad.json")
    with pytest.raises(StorageError, match=r"^s3://primary/absent.json: reading failed: NoSuchKey"):
        bucket.get_json("absent.json")


def test_a_single_region_kms_key_of_another_region_writes_nothing(clients: AwsClients) -> None:
    # Given the replica bucket in eu-west-1 and a KMS key that exists only in us-east-1
    make_bucket(clients, "replica", region=REPLICA)
    key = "arn:aws:kms:us-east-1:123456789012:key/1234"
    replica = Buckets(clients, key).bucket("replica", REPLICA)

    # When a document is written there
    with pytest.raises(StorageError, match="cannot encrypt in eu-west-1"):
        replica.put_json("m.json", {})

    # Then nothing was written
    assert list(replica.iter_objects("")) == []


# deletes ----------------------------------------------------------------------------------


def test_delete_all_versions_leaves_nothing_of_the_key(clients: AwsClients, buckets: Buckets) -> None:
    make_bucket(clients, "primary")
    s3 = clients.s3()
    for body in (b"1", b"2"):
        s3.put_object(Bucket="primary", Key="k", Body=body)
    s3.delete_object(Bucket="primary", Key="k")
    s3.put_object(Bucket="primary", Key="k-other", Body=b"kept")
    bucket = buckets.bucket("primary")

    bucket.delete_all_versions("k")

    assert [v.key for v in bucket.iter_versions("")] == ["k-other"]


def test_a_version_under_legal_hold_is_refused_and_kept(clients: AwsClients, buckets: Buckets) -> None:
    # Given two versions of a key, the older one under a legal hold
    make_bucket(clients, "archive", lock=True)
    s3 = clients.s3()
    held = s3.put_object(Bucket="archive", Key="k", Body=b"held")["VersionId"]
    s3.put_object_legal_hold(Bucket="archive", Key="k", VersionId=held, LegalHold={"Status": "ON"})
    s3.put_object(Bucket="archive", Key="k", Body=b"free")
    archive = buckets.bucket("archive")

    # When every version is deleted
    with pytest.raises(DeleteRefused) as refused:
        archive.delete_all_versions("k")

    # Then the refusal names the locked version and says the lock is never forced, and that version stays
    message = str(refused.value)
    # (S3 names the version refused; moto leaves it out)
    assert message.startswith("s3://archive/k version ") and ": delete refused: AccessDenied" in message
    assert "never bypasses a lock" in message and "\n" not in message
    assert [v.version_id for v in archive.iter_versions("k")] == [held]
    with pytest.raises(DeleteRefused, match=f"^s3://archive/k version {held}: delete refused: AccessDenied"):
        archive.delete_version("k", held)


# archive storage classes and restores ----------------------------------------------------------


def test_an_archived_object_is_not_readable_until_restored(clients: AwsClients, buckets: Buckets) -> None:
    # Given an object in DEEP_ARCHIVE
    make_bucket(clients, "archive")
    clients.s3().put_object(Bucket="archive", Key="k", Body=b"dump", StorageClass="DEEP_ARCHIVE")
    archive = buckets.bucket("archive")
    head = archive.head("k")
    assert head is not None and head.storage_class == "DEEP_ARCHIVE" and head.restore is None

    # When it is read: ObjectArchived, a StorageError that names the object
    with pytest.raises(ObjectArchived, match=r"^s3://archive/k: reading failed: InvalidObjectState"):
        next(archive.iter_chunks("k"))

    # When a restore is requested: S3's restore status is on the head, and the bytes come back
    archive.request_restore("k", head.version_id, days=2, tier="Standard")
    restored = archive.head("k")
    assert restored is not None and restored.restore is not None
    assert restored.restore.ongoing is False and restored.restore.expiry is not None
    assert b"".join(archive.iter_chunks("k")) == b"dump"


# what other S3 errors become -------------------------------------------------------------------


def test_a_refused_head_is_an_error_not_an_absent_object() -> None:
    bucket, stubber = stubbed()
    stubber.add_client_error(
        "head_object", service_error_code="403", service_message="Forbidden", http_status_code=403
    )

    with stubber, pytest.raises(StorageError) as refused:
        bucket.head("k", "v7")

    assert str(refused.value) == "s3://stubbed-bucket/k version v7: HEAD failed: 403: Forbidden"
    assert not isinstance(refused.value, BucketNotFound)


def test_a_restore_already_running_is_told_apart() -> None:
    bucket, stubber = stubbed()
    stubber.add_client_error(
        "restore_object",
        service_error_code="RestoreAlreadyInProgress",
        service_message="Object restore is already in progress",
        http_status_code=409,
    )
    stubber.add_client_error("restore_object", service_error_code="SlowDown", http_status_code=503)

    with stubber:
        with pytest.raises(RestoreInProgress, match="RestoreAlreadyInProgress"):
            bucket.request_restore("k", None, days=1, tier="Bulk")
        with pytest.raises(StorageError) as throttled:
            bucket.request_restore("k", None, days=1, tier="Bulk")

    assert not isinstance(throttled.value, RestoreInProgress)
    assert str(throttled.value).startswith("s3://stubbed-bucket/k: restore request failed: SlowDown")


def test_a_refused_delete_request_is_told_apart_from_a_failed_one() -> None:
    bucket, stubber = stubbed()
    stubber.add_client_error("delete_objects", service_error_code="AccessDenied", http_status_code=403)
    stubber.add_client_error("delete_objects", service_error_code="InternalError", http_status_code=500)

    with stubber:
        with pytest.raises(DeleteRefused, match=r"^s3://stubbed-bucket/k: delete refused: AccessDenied"):
            bucket.delete_versions([("k", "v1")])
        with pytest.raises(StorageError) as failed:
            bucket.delete_versions([("k", "v1")])

    assert not isinstance(failed.value, DeleteRefused)
    assert str(failed.value).startswith("s3://stubbed-bucket/k: delete failed: InternalError")


def test_per_key_delete_errors_name_the_first_and_count_the_rest() -> None:
    bucket, stubber = stubbed()
    errors = [
        {"Key": f"k{n}", "VersionId": f"v{n}", "Code": "InternalError", "Message": "later"} for n in range(3)
    ]
    stubber.add_response("delete_objects", {"Errors": errors})

    with stubber, pytest.raises(StorageError) as failed:
        bucket.delete_versions([(f"k{n}", f"v{n}") for n in range(3)])

    assert (
        str(failed.value)
        == "s3://stubbed-bucket/k0 version v0: delete failed (and 2 more): InternalError: later"
    )
    assert not isinstance(failed.value, DeleteRefused)


def test_a_listing_that_fails_midway_names_the_prefix() -> None:
    bucket, stubber = stubbed()
    stubber.add_response(
        "list_objects_v2",
        {"Contents": [{"Key": "p/a", "Size": 1}], "IsTruncated": True, "NextContinuationToken": "t"},
    )
    stubber.add_client_error("list_objects_v2", service_error_code="SlowDown", http_status_code=503)

    listed: list[str] = []
    with stubber, pytest.raises(StorageError, match=r"^s3://stubbed-bucket/p/: listing failed: SlowDown"):
        listed.extend(entry.key for entry in bucket.iter_objects("p/"))

    assert listed == ["p/a"]


def test_a_copy_that_fails_names_both_ends() -> None:
    source, _ = stubbed("source-bucket")
    destination, stubber = stubbed("destination-bucket")
    stubber.add_client_error("head_object", service_error_code="403", http_status_code=403)

    with stubber, pytest.raises(StorageError) as failed:
        destination.copy_in(source, ObjectHead("k", 10, version_id="v1"), metadata={}, tags={})

    assert str(failed.value).startswith("copying s3://source-bucket/k to s3://destination-bucket/k failed: ")


def test_a_backup_manifest_round_trips_through_the_writer(clients: AwsClients, buckets: Buckets) -> None:
    # (the multipart writer through the bucket: metadata on the object, SHA-256 of what was written)
    make_bucket(clients, "primary")
    writer = buckets.bucket("primary").writer("d.dump", metadata={"backup-id": "b1"})
    writer.write(json.dumps({"n": 1}).encode())
    stored = writer.complete()

    assert stored.sha256 == hashlib.sha256(b'{"n": 1}').hexdigest()
    assert clients.s3().head_object(Bucket="primary", Key="d.dump")["Metadata"] == {"backup-id": "b1"}
