"""Backup faults injected for real: S3 and DynamoDB failing behind a proxy on a real socket."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fault_proxy import FaultProxy, Rule, dynamodb, s3_complete_upload, s3_put_tagging, s3_upload_part
from typer.testing import CliRunner

from bucket_state import assert_withdrawn_then_purged
from drsentry.adapters.aws import AwsClients
from drsentry.core.errors import CatalogWriteFailed
from drsentry.core.events import ScheduledEvent
from drsentry.jobs.backup.job import backup_target, run_scheduled_backup
from drsentry.jobs.runtime import build_runtime
from drsentry.operator.cli.app import app

pytestmark = pytest.mark.integration
FEW_ATTEMPTS = 3


@pytest.fixture
def proxy(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(aws_endpoint) as fault_proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
        yield fault_proxy


@pytest.fixture
def big_source(source_db: str) -> str:
    """Enough data for several 6 MiB upload parts."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create table payload as select g as id, md5(random()::text) || md5(random()::text) as a"
            " from generate_series(1, 400000) g"
        )
    return source_db


def _runtime(config: Any) -> Any:
    return build_runtime(config, clients=AwsClients(config.storage.region, max_attempts=FEW_ATTEMPTS))


def _object_sha256(clients: Any, bucket: str, key: str) -> str:
    return hashlib.sha256(clients.s3().get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()


def _nothing_left(clients: Any, bucket: str) -> bool:
    s3 = clients.s3()
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    versions = s3.list_object_versions(Bucket=bucket)
    return not uploads and not versions.get("Versions") and not versions.get("DeleteMarkers")


def test_transient_503_on_a_part_is_retried(
    big_source: str, make_config: Any, proxy: FaultProxy, clients: Any
) -> None:
    # Given S3 answering 503 to the first two part uploads
    config, _ = make_config(big_source)
    rule = proxy.add(Rule(s3_upload_part, "status", status=503, times=2))

    # When the backup runs
    record = backup_target(_runtime(config), "app")

    # Then botocore's retries carry it through, and the object is whole
    assert rule.applied == 2
    assert record.status == "completed", record.error
    assert _object_sha256(clients, record.bucket, record.key) == record.sha256


def test_connection_cut_mid_body_is_retried(
    big_source: str, make_config: Any, proxy: FaultProxy, clients: Any
) -> None:
    config, _ = make_config(big_source)
    rule = proxy.add(Rule(s3_upload_part, "cut", first=2, times=1))

    record = backup_target(_runtime(config), "app")

    assert rule.applied == 1
    assert record.status == "completed", record.error
    assert _object_sha256(clients, record.bucket, record.key) == record.sha256


def test_persistent_part_failure_aborts_the_upload(
    big_source: str, make_config: Any, proxy: FaultProxy, clients: Any
) -> None:
    # Given S3 failing every upload of part 2 onwards
    config, _ = make_config(big_source)
    proxy.add(Rule(s3_upload_part, "status", status=500, first=2))

    record = backup_target(_runtime(config), "app")

    # Then the upload is aborted, nothing is stored, and the record says which part failed
    assert record.status == "failed"
    assert "failed: InternalError" in record.error
    assert _nothing_left(clients, config.storage.bucket)
    assert _runtime(config).catalog.get_backup(record.backup_id).status == "failed"


def test_failed_completion_aborts_the_upload(
    source_db: str, make_config: Any, proxy: FaultProxy, clients: Any
) -> None:
    config, _ = make_config(source_db)
    proxy.add(Rule(s3_complete_upload, "status", status=500))

    record = backup_target(_runtime(config), "app")

    assert record.status == "failed"
    assert "completing upload failed" in record.error
    assert _nothing_left(clients, config.storage.bucket)


def test_failed_tagging_removes_the_completed_object(
    source_db: str, make_config: Any, proxy: FaultProxy, clients: Any
) -> None:
    # Given S3 refusing to tag the finished dump with its SHA-256 (retries included)
    config, _ = make_config(source_db)
    rule = proxy.add(Rule(s3_put_tagging, "status", status=500))

    record = backup_target(_runtime(config), "app")

    # Then no untagged dump stays visible: it is withdrawn at once and the run is failed; the next
    # archive run deletes every version of it
    assert rule.applied >= FEW_ATTEMPTS  # retried before giving up
    assert record.status == "failed"
    assert "tagging failed" in (record.error or "")
    assert _runtime(config).catalog.get_backup(record.backup_id).status == "failed"
    hidden, report = assert_withdrawn_then_purged(_runtime(config), "app")
    assert hidden == [record.key]
    assert report.purged == 1


def test_latency_does_not_break_the_backup(
    source_db: str, make_config: Any, proxy: FaultProxy, clients: Any
) -> None:
    config, _ = make_config(source_db)
    rule = proxy.add(Rule(s3_upload_part, "delay", delay_seconds=0.5))

    record = backup_target(_runtime(config), "app")

    assert rule.applied >= 1
    assert record.status == "completed", record.error


def test_throttled_catalog_write_is_retried(source_db: str, make_config: Any, proxy: FaultProxy) -> None:
    config, _ = make_config(source_db)
    rule = proxy.add(Rule(dynamodb("PutItem", b'"backup#'), "status", status=500, times=1))

    record = backup_target(_runtime(config), "app")

    assert rule.applied == 1
    assert record.status == "completed"
    assert _runtime(config).catalog.get_backup(record.backup_id).sha256 == record.sha256


def test_catalog_down_after_upload_names_the_orphan_and_rebuild_recovers_it(
    source_db: str, make_config: Any, proxy: FaultProxy, clients: Any
) -> None:
    # Given DynamoDB refusing every write of a completed backup record
    config, path = make_config(source_db)
    rule = proxy.add(Rule(dynamodb("PutItem", b'"completed"'), "status", status=500))

    # When the backup runs, it fails loudly, naming the stored object and the repair command
    with pytest.raises(CatalogWriteFailed) as failure:
        backup_target(_runtime(config), "app")
    message = str(failure.value)
    assert "drsentry catalog rebuild --target app" in message
    key = message.split(f"s3://{config.storage.bucket}/", 1)[1].split(" ", 1)[0]
    tags = clients.s3().get_object_tagging(Bucket=config.storage.bucket, Key=key)["TagSet"]
    assert "sha256" in {tag["Key"] for tag in tags}
    assert _runtime(config).catalog.list_backups("app") == []

    # And once DynamoDB is back, `catalog rebuild` restores the record from the manifest
    rule.times = 0
    result = CliRunner().invoke(app, ["catalog", "rebuild", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    (report,) = json.loads(result.stdout)
    assert report["added"] and report["unreadable"] == {}
    (record,) = _runtime(config).catalog.list_backups("app")
    assert record.key == key
    assert record.status == "completed"
    assert record.tier == "monthly"
    # with the roles object the manifest names, as it is in the bucket
    assert record.globals is not None
    roles_tags = clients.s3().get_object_tagging(Bucket=config.storage.bucket, Key=record.globals.key)[
        "TagSet"
    ]
    assert {tag["Key"]: tag["Value"] for tag in roles_tags}["sha256"] == record.globals.sha256


def test_scheduled_run_reports_catalog_errors_per_target(
    source_db: str, make_config: Any, proxy: FaultProxy
) -> None:
    config, _ = make_config(source_db)
    proxy.add(Rule(dynamodb("PutItem", b'"completed"'), "status", status=500))

    result = run_scheduled_backup(_runtime(config), ScheduledEvent.now("app"))

    assert result.records == []
    (not_run,) = result.not_run
    assert not_run.target == "app"
    assert "could not be written" in (not_run.reason or "")


def test_rebuild_reports_a_manifest_that_is_not_json(source_db: str, make_config: Any, clients: Any) -> None:
    # Given one good backup and a manifest that is not valid JSON
    config, path = make_config(source_db)
    backup_target(build_runtime(config), "app")
    bad_key = "backups/app/2026/01/01/20260101T000000000Z-00000000.manifest.json"
    clients.s3().put_object(Bucket=config.storage.bucket, Key=bad_key, Body=b"{not json")

    result = CliRunner().invoke(app, ["catalog", "rebuild", "--config", str(path), "--json"])

    # Then the good one is already present, the bad one is named with the reason, exit 1
    assert result.exit_code == 1
    (report,) = json.loads(result.stdout)
    assert report["already_present"] == 1
    assert report["added"] == []
    assert "not valid JSON" in report["unreadable"][bad_key]
