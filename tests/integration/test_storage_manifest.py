"""Storage-bucket manifests on moto's server over HTTP, beside real backups of a real PostgreSQL.

One scenario is shared by the module (its backups and verification are the slow part): an
application bucket of 10,000 objects and a small versioned one are manifested with backup 1;
then 10% of the big bucket is deleted, and in the versioned bucket one key is deleted (a
delete marker), one overwritten and one destroyed with every version; backup 2 and its
verification follow. Each test checks one consequence of it.

The 10,000 objects are put straight into the in-process moto server's backend: over HTTP
they take 30 to 45 seconds on a loaded machine, and what is under test is the listing and the
manifest, which go over HTTP like every other request.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import secrets
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from drsentry.adapters.aws import AwsClients
from drsentry.adapters.buckets import Buckets
from drsentry.core.config import BucketConfig, Config, dump_config, parse_config
from drsentry.core.records import BackupRecord, Check, RunNotice, VerificationRecord
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.jobs.storage_manifest.rules import storage_manifest_key
from drsentry.jobs.storage_manifest.write import write_manifest
from drsentry.jobs.verify.job import verify_target
from drsentry.local.provision import provision
from drsentry.local.sample import create_sample_database, drop_database
from drsentry.operator.cli.app import app

pytestmark = pytest.mark.integration

REGION = "us-east-1"
BIG = 10_000
VERSIONED = 60
# The moto server runs in this process, so tracemalloc sees its allocations too: werkzeug's
# server reads leftover request bytes into a 10 MB buffer at the end of some requests
# (werkzeug/serving.py, `rfile.read(10_000_000)`). Beyond that, writing the manifest of 10,000
# keys measured 3 to 4 MiB (one listing page on each side of the socket, the gzip stream);
# keeping the listing in memory instead adds another 4 MiB per 10,000 keys.
WERKZEUG_READ_BUFFER = 10_000_000
MANIFEST_MEMORY_BOUND = WERKZEUG_READ_BUFFER + int(5.5 * 1024 * 1024)


def fill_bucket(bucket: str, count: int) -> dict[str, int]:
    """`count` objects of upload-like keys and sizes, straight into the moto server's backend."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    backend = get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"]
    sizes = {}
    for number in range(count):
        key = f"uploads/org-{number % 97:03d}/{number:05d}-{secrets.token_hex(8)}.pdf"
        body = b"%PDF" + bytes(number % 200)
        backend.put_object(bucket, key, body)
        sizes[key] = len(body)
    return sizes


def create_bucket(clients: AwsClients, *, versioned: bool = False) -> str:
    name = f"uploads-{secrets.token_hex(5)}"
    s3 = clients.s3(REGION)
    s3.create_bucket(Bucket=name)
    if versioned:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def read_manifest(clients: AwsClients, bucket: str, key: str) -> tuple[list[dict[str, Any]], bytes]:
    body = clients.s3(REGION).get_object(Bucket=bucket, Key=key)["Body"].read()
    lines = gzip.decompress(body).decode().splitlines()
    return [json.loads(line) for line in lines], body


def check(record: VerificationRecord, name: str) -> Check:
    return next(c for c in record.checks if c.name == name)


def drsentry(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@dataclass
class Scenario:
    runtime: Runtime
    config_path: Path
    big: str
    versioned: str
    first: BackupRecord
    second: BackupRecord
    verification: VerificationRecord
    deleted_key: str
    deleted_version: str
    overwritten_key: str
    overwritten_version: str
    destroyed_key: str


def write_config(
    directory: Path, clients: AwsClients, source_dsn: str, admin_dsn: str, **target: Any
) -> Path:
    suffix = secrets.token_hex(4)
    raw = {
        "storage": {"bucket": f"sm-primary-{suffix}", "region": REGION, "prefix": "backups/"},
        "catalog": {"table": f"sm-catalog-{suffix}"},
        "notifications": {"sns_topic_arn": f"arn:aws:sns:{REGION}:123456789012:sm-alerts-{suffix}"},
        "targets": [
            {
                "name": "app",
                "dsn": source_dsn,
                "verify": {"scratch_dsn": admin_dsn, "critical_tables": ["organizations"]},
                **target,
            }
        ],
    }
    config = parse_config(yaml.safe_dump(raw))
    provision(config, clients, secret_values={})
    path = directory / f"drsentry-{suffix}.yaml"
    path.write_text(dump_config(config))
    return path


def load(path: Path) -> Config:
    return parse_config(path.read_text())


@pytest.fixture(scope="module")
def source_dsn(pg_server: Any) -> Iterator[str]:
    admin_dsn = str(pg_server.dsn("postgres"))
    name = f"smsrc_{secrets.token_hex(3)}"
    yield create_sample_database(admin_dsn, name)
    drop_database(admin_dsn, name)


@pytest.fixture(scope="module")
def scenario(
    aws_endpoint: str, pg_server: Any, source_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Scenario:
    clients = AwsClients(REGION)
    s3 = clients.s3(REGION)
    big = create_bucket(clients)
    big_sizes = fill_bucket(big, BIG)
    versioned = create_bucket(clients, versioned=True)
    for number in range(VERSIONED):
        s3.put_object(Bucket=versioned, Key=f"invoices/{number:03d}.pdf", Body=b"%PDF-1.7 invoice")
    path = write_config(
        tmp_path_factory.mktemp("storage"),
        clients,
        source_dsn,
        str(pg_server.dsn("postgres")),
        storage=[{"bucket": big, "region": REGION}, {"bucket": versioned, "region": REGION}],
    )
    runtime = build_runtime(load(path), clients=clients)
    first = backup_target(runtime, "app")
    assert first.status == "completed", first.error

    # 10% of the big bucket goes, in DeleteObjects batches as a mass deletion would.
    doomed = sorted(big_sizes)[: BIG // 10]
    for start in range(0, len(doomed), 1000):
        batch = [{"Key": key} for key in doomed[start : start + 1000]]
        s3.delete_objects(Bucket=big, Delete={"Objects": batch, "Quiet": True})  # type: ignore[typeddict-item]
    # In the versioned bucket: deleted (recoverable), overwritten (recoverable), destroyed (lost).
    versions = {
        v["Key"]: v["VersionId"] for v in s3.list_object_versions(Bucket=versioned).get("Versions", [])
    }
    deleted, overwritten, destroyed = "invoices/007.pdf", "invoices/008.pdf", "invoices/009.pdf"
    s3.delete_object(Bucket=versioned, Key=deleted)
    s3.put_object(Bucket=versioned, Key=overwritten, Body=b"%PDF-1.7 ENCRYPTED")
    s3.delete_object(Bucket=versioned, Key=destroyed, VersionId=versions[destroyed])

    second = backup_target(runtime, "app")
    assert second.status == "completed", second.error
    (verification,) = verify_target(runtime, "app")
    return Scenario(
        runtime=runtime,
        config_path=path,
        big=big,
        versioned=versioned,
        first=first,
        second=second,
        verification=verification,
        deleted_key=deleted,
        deleted_version=versions[deleted],
        overwritten_key=overwritten,
        overwritten_version=versions[overwritten],
        destroyed_key=destroyed,
    )


# writing manifests -------------------------------------------------------------------------------


def test_a_manifest_of_10000_objects_is_streamed_with_flat_memory(aws_endpoint: str) -> None:
    # Given a bucket of 10,000 objects and a backup bucket
    clients = AwsClients(REGION)
    source = create_bucket(clients)
    sizes = fill_bucket(source, BIG)
    backups = create_bucket(clients)
    buckets = Buckets(clients)

    # When its manifest is written, under tracemalloc
    tracemalloc.start()
    try:
        totals = write_manifest(
            buckets, BucketConfig(bucket=source, region=REGION), buckets.bucket(backups), "m.jsonl.gz"
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    # Then memory stayed near one listing page's, not the listing's
    assert peak < MANIFEST_MEMORY_BOUND, f"peak traced memory {peak / 2**20:.1f} MiB"
    # ... and the manifest lists every key once, in key order, with its size, ETag and storage class
    rows, body = read_manifest(clients, backups, "m.jsonl.gz")
    assert [row["key"] for row in rows] == sorted(sizes)
    assert {row["key"]: row["size"] for row in rows} == sizes
    first = rows[0]
    assert set(first) == {"key", "size", "etag", "last_modified", "storage_class", "version_id"}
    assert first["etag"] == hashlib.md5(b"%PDF").hexdigest()  # S3's ETag of a simple upload
    assert first["storage_class"] == "STANDARD" and first["version_id"] is None
    assert first["last_modified"].endswith("Z")
    # ... and the totals are the bucket's, the SHA-256 the stored object's
    assert (totals.objects, totals.bytes, totals.versioned) == (BIG, sum(sizes.values()), False)
    assert totals.sha256 == hashlib.sha256(body).hexdigest()


def test_the_backup_records_each_manifest_beside_the_dump(scenario: Scenario) -> None:
    # Given the first backup of a target with two storage buckets
    first = scenario.first
    config = scenario.runtime.config

    # Then each bucket's totals, manifest key and SHA-256 are in the catalog record
    stored = scenario.runtime.catalog.get_backup(first.backup_id)
    assert stored.storage == first.storage
    big, versioned = first.storage or []
    day = f"{first.backup_id[0:4]}/{first.backup_id[4:6]}/{first.backup_id[6:8]}"
    assert big.key == f"backups/app/{day}/{first.backup_id}.storage.{scenario.big}.jsonl.gz"
    assert big.key == storage_manifest_key("backups/", "app", first.backup_id, scenario.big)
    assert (big.objects, big.versioned, big.error) == (BIG, False, None)
    assert (versioned.objects, versioned.versioned) == (VERSIONED, True)
    assert versioned.bytes == VERSIONED * len(b"%PDF-1.7 invoice")
    # ... and the manifest sits beside the dump, its bytes hashing to the recorded SHA-256
    rows, body = read_manifest(scenario.runtime.clients, config.storage.bucket, versioned.key)
    assert hashlib.sha256(body).hexdigest() == versioned.sha256
    assert len(rows) == VERSIONED and all(row["version_id"] for row in rows)
    assert first.key.rsplit("/", 1)[0] == versioned.key.rsplit("/", 1)[0]


# verification --------------------------------------------------------------------------------------


def test_deleting_10_percent_of_a_bucket_fails_the_next_verification_with_the_counts(
    scenario: Scenario,
) -> None:
    # Given 1,000 of 10,000 objects deleted between two backups
    record = scenario.verification

    # Then the verification of the newer backup fails on that bucket, with the counts
    assert record.backup_id == scenario.second.backup_id
    assert record.status == "failure"
    storage = check(record, f"storage: {scenario.big}")
    assert (storage.severity, storage.status) == ("critical", "failed")
    assert "objects 10,000 -> 9,000 (-10.0%)" in storage.detail
    assert "bytes" in storage.detail and "a drop of more than 5% fails" in storage.detail
    assert scenario.first.backup_id in storage.detail
    # ... and the sample of the previous manifest found keys gone for good (the bucket is not versioned)
    assert "lost" in storage.detail and "recoverable" not in storage.detail
    assert f"storage: {scenario.big}" in (record.error_details or "")
    # ... while the database checks themselves passed
    assert check(record, "restore").status == "passed"


def test_a_deleted_key_in_a_versioned_bucket_is_reported_recoverable(scenario: Scenario) -> None:
    # Given a versioned bucket that lost 2 of 60 keys (within the 5% tolerance)
    storage = check(scenario.verification, f"storage: {scenario.versioned}")

    # Then its check passed and says which missing key a prior version can bring back
    assert storage.status == "passed", storage.detail
    assert "objects 60 -> 58 (-3.3%)" in storage.detail
    assert (
        "60 sampled keys of the previous manifest: 58 present (1 changed since), 2 missing" in storage.detail
    )
    assert f"1 recoverable from a prior version ({scenario.deleted_key})" in storage.detail
    assert f"1 lost ({scenario.destroyed_key})" in storage.detail


# restore list ----------------------------------------------------------------------------------------


def test_restore_list_names_the_version_to_restore_per_key_and_what_is_lost(scenario: Scenario) -> None:
    # When the operator asks what recreating the versioned bucket as of backup 1 takes
    result = drsentry(
        "storage", "restore-list", scenario.first.backup_id, "--bucket", scenario.versioned,
        "--config", str(scenario.config_path), "--json",
    )  # fmt: skip

    # Then exit 1 (a key cannot be recovered) and one JSON document with a line per key to act on
    assert result.exit_code == 1, result.stderr
    document = json.loads(result.stdout)
    assert document["bucket"] == scenario.versioned and document["versioned"] is True
    assert document["backup_id"] == scenario.first.backup_id
    assert document["summary"] == {
        "current": VERSIONED - 3,
        "restore": 2,
        "missing": 1,
        "total": VERSIONED,
        "bytes_to_restore": 2 * len(b"%PDF-1.7 invoice"),
    }
    actions = {item["key"]: item for item in document["keys"]}
    assert set(actions) == {scenario.deleted_key, scenario.overwritten_key, scenario.destroyed_key}
    assert actions[scenario.deleted_key]["action"] == "restore"
    assert actions[scenario.deleted_key]["version_id"] == scenario.deleted_version
    assert actions[scenario.overwritten_key]["version_id"] == scenario.overwritten_version
    assert actions[scenario.destroyed_key] | {"note": ""} == {
        "key": scenario.destroyed_key,
        "action": "missing",
        "version_id": None,
        "size": len(b"%PDF-1.7 invoice"),
        "note": "",
    }


def test_restore_list_reads_a_manifest_by_its_s3_url(scenario: Scenario) -> None:
    # Given the URL of the unversioned bucket's manifest of backup 1
    entry = next(e for e in scenario.first.storage or [] if e.bucket == scenario.big)
    url = f"s3://{scenario.runtime.config.storage.bucket}/{entry.key}"

    # When the operator asks for its restore list
    result = drsentry("storage", "restore-list", url, "--config", str(scenario.config_path))

    # Then the 1,000 deleted keys are missing (no versions to restore from), the rest current
    assert result.exit_code == 1, result.stderr
    assert result.stdout.count("missing ") == BIG // 10
    assert "deleted (bucket not versioned)" in result.stdout
    assert "10,000 keys in the manifest: 9,000 current, 0 to restore from a version" in result.stdout


def test_restore_list_of_a_backup_without_that_bucket_is_bad_input(scenario: Scenario) -> None:
    result = drsentry(
        "storage", "restore-list", scenario.first.backup_id, "--bucket", "acme-elsewhere",
        "--config", str(scenario.config_path),
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        f"has no manifest of acme-elsewhere (it has: {scenario.big}, {scenario.versioned})" in result.stderr
    )


# failure paths -----------------------------------------------------------------------------------------


class RecordingNotifier:
    def __init__(self) -> None:
        self.notices: list[RunNotice] = []

    def send(self, notice: RunNotice, *, failing_checks: list[str] | None = None) -> None:
        self.notices.append(notice)


def test_a_manifest_that_cannot_be_written_warns_but_never_fails_the_backup(
    aws_endpoint: str, pg_server: Any, source_dsn: str, tmp_path: Path
) -> None:
    # Given a storage bucket that does not exist (deleted, or a typo in the config)
    clients = AwsClients(REGION)
    path = write_config(
        tmp_path, clients, source_dsn, str(pg_server.dsn("postgres")),
        storage=[{"bucket": "acme-gone-uploads", "region": REGION}],
    )  # fmt: skip
    runtime = build_runtime(load(path), clients=clients)
    notifier = RecordingNotifier()
    runtime.notifier = notifier

    # When the backup runs
    record = backup_target(runtime, "app")

    # Then the database backup completed and the bucket's entry carries the error
    assert record.status == "completed"
    (entry,) = record.storage or []
    assert entry.objects is None and entry.error is not None and "NoSuchBucket" in entry.error
    assert runtime.catalog.get_backup(record.backup_id).storage == record.storage
    # ... no partial manifest or open upload is left in the backup bucket
    s3 = clients.s3(REGION)
    assert s3.head_object(Bucket=record.bucket, Key=record.key)["ContentLength"] == record.size_bytes
    listed = s3.list_objects_v2(Bucket=record.bucket).get("Contents", [])
    assert not [obj for obj in listed if obj["Key"].endswith(".jsonl.gz")]
    assert not s3.list_multipart_uploads(Bucket=record.bucket).get("Uploads")
    # ... and the run's one notice is a warning naming the bucket
    (notice,) = notifier.notices
    assert (notice.severity, notice.status) == ("warning", "completed")
    assert "storage manifest failed: acme-gone-uploads" in notice.summary
