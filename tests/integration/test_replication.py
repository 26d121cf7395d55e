"""Cross-region replication on moto's server over HTTP: the copy after a backup, and the check.

moto keeps replication configurations but never replicates and never reports a
``ReplicationStatus``; the crr tests therefore add that header to the real HEAD responses
of the primary-region client (a botocore ``before-parse`` hook), so everything from the
HTTP response on, parsing included, runs as it does against S3.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
from typer.testing import CliRunner

from drsentry.adapters.buckets import Bucket, CopyParts, MiB
from drsentry.core.config import Config, dump_config
from drsentry.core.events import ScheduledEvent
from drsentry.core.records import BackupRecord, iso, new_backup_id, utc_now
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.backup.rules import object_keys
from drsentry.jobs.replication.check import check_replication
from drsentry.jobs.replication.copy import copy_object, replicate_backup
from drsentry.jobs.replication.job import latest_replication_check, run_scheduled_replication_check
from drsentry.jobs.replication.report import ReplicationReport
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.operator.cli.app import app

pytestmark = [
    pytest.mark.integration,
    # Outside Lambda, Powertools Idempotency has no remaining time to register (idempotency.py).
    pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time left"),
]

PRIMARY_REGION = "us-east-1"
REPLICA_REGION = "eu-west-1"


# helpers ------------------------------------------------------------------------


def with_replica(config: Config, **changes: Any) -> Config:
    """The same configuration with other replica settings (config models are frozen)."""
    assert config.storage.replica is not None
    replica = config.storage.replica.model_copy(update=changes)
    return config.model_copy(update={"storage": config.storage.model_copy(update={"replica": replica})})


def synthetic_backup(runtime: Runtime, age: timedelta, body: bytes | None = None) -> BackupRecord:
    """A completed backup as backup.py leaves it (object with its tags, manifest, record),
    without pg_dump, `age` old."""
    config = runtime.config
    body = body if body is not None else secrets.token_bytes(4096)
    started = utc_now() - age
    backup_id = new_backup_id(started)
    key, manifest_key = object_keys(config.storage.prefix, "app", backup_id)
    sha256 = hashlib.sha256(body).hexdigest()
    s3 = runtime.clients.s3(config.storage.region)
    s3.put_object(
        Bucket=config.storage.bucket,
        Key=key,
        Body=body,
        Metadata={"backup-id": backup_id},
        Tagging=f"sha256={sha256}&size-bytes={len(body)}",
    )
    s3.put_object(Bucket=config.storage.bucket, Key=manifest_key, Body=b'{"format": "drsentry-backup/1"}')
    record = BackupRecord(
        target="app",
        backup_id=backup_id,
        status="completed",
        started_at=iso(started),
        finished_at=iso(started + timedelta(seconds=5)),
        size_bytes=len(body),
        sha256=sha256,
        bucket=config.storage.bucket,
        key=key,
        manifest_key=manifest_key,
        tier="hourly",
        replica="pending",
    )
    runtime.catalog.put_backup(record)
    return record


def replica_s3(runtime: Runtime) -> Any:
    return runtime.clients.s3(REPLICA_REGION)


def replica_bucket(runtime: Runtime) -> str:
    assert runtime.config.storage.replica is not None
    return runtime.config.storage.replica.bucket


def object_tags(s3: Any, bucket: str, key: str) -> dict[str, str]:
    return Bucket(s3, bucket).tags(key)


def stored_record(runtime: Runtime, backup_id: str) -> BackupRecord:
    return runtime.catalog.get_backup(backup_id)


def later(runtime: Runtime, delta: timedelta) -> None:
    """Move the runtime's clock instead of waiting."""
    moment = utc_now() + delta
    runtime.clock = lambda: moment


def report_replication_status(runtime: Runtime, status: str) -> None:
    """Make the primary region's HEAD responses carry `x-amz-replication-status`, as S3's do."""

    def add_header(response_dict: dict[str, Any], **_: Any) -> None:
        if response_dict["status_code"] == 200:
            response_dict["headers"]["x-amz-replication-status"] = status

    runtime.clients.s3(PRIMARY_REGION).meta.events.register("before-parse.s3.HeadObject", add_header)


def crr_runtime(config: Config) -> Runtime:
    """mode crr with the replication rule the template would create (moto stores, never runs it)."""
    config = with_replica(config, mode="crr")
    runtime = build_runtime(config)
    assert config.storage.replica is not None
    runtime.clients.s3(PRIMARY_REGION).put_bucket_replication(
        Bucket=config.storage.bucket,
        ReplicationConfiguration={
            "Role": "arn:aws:iam::123456789012:role/drsentry-replication",
            "Rules": [
                {
                    "ID": "backups",
                    "Priority": 1,
                    "Status": "Enabled",
                    "Filter": {"Prefix": config.storage.prefix},
                    "DeleteMarkerReplication": {"Status": "Disabled"},
                    "Destination": {"Bucket": f"arn:aws:s3:::{config.storage.replica.bucket}"},
                }
            ],
        },
    )
    return runtime


def subscribe(runtime: Runtime) -> Callable[[], list[dict[str, Any]]]:
    """An SQS queue on the alerts topic; returns a reader of the notices received."""
    sqs = runtime.clients.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"replication-{secrets.token_hex(4)}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    runtime.clients.sns.subscribe(
        TopicArn=runtime.config.notifications.sns_topic_arn, Protocol="sqs", Endpoint=queue_arn
    )

    def notices() -> list[dict[str, Any]]:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(json.loads(message["Body"])["Message"]) for message in messages]

    return notices


def emitted_metrics(stdout: str) -> dict[str, float]:
    """Metric name to value of every EMF document printed."""
    found: dict[str, float] = {}
    for line in stdout.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            document = json.loads(line)
            for directive in document["_aws"]["CloudWatchMetrics"]:
                for metric in directive["Metrics"]:
                    value = document[metric["Name"]]
                    found[metric["Name"]] = value[-1] if isinstance(value, list) else value
    return found


def problem_checks(report: ReplicationReport) -> dict[str, str]:
    return {problem.check: problem.severity for problem in report.problems}


# copy mode ----------------------------------------------------------------------


def test_fresh_backup_is_replicated_and_checked_ok(
    source_db: str, make_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a real backup of the sample database
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error

    # When it is copied to the replica region and then checked
    replicated = replicate_backup(runtime, record)
    report = check_replication(runtime, "app")

    # Then the replica holds the same bytes, metadata, tags and manifest, and everything says ok
    assert replicated.replica == "ok", replicated.replica_detail
    body = replica_s3(runtime).get_object(Bucket=replica_bucket(runtime), Key=record.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record.sha256
    head = replica_s3(runtime).head_object(Bucket=replica_bucket(runtime), Key=record.key)
    assert head["Metadata"]["backup-id"] == record.backup_id
    assert object_tags(replica_s3(runtime), replica_bucket(runtime), record.key)["sha256"] == record.sha256
    assert head["ServerSideEncryption"] in {"AES256", "aws:kms"}
    manifest = replica_s3(runtime).get_object(Bucket=replica_bucket(runtime), Key=record.manifest_key)
    assert json.loads(manifest["Body"].read())["sha256"] == record.sha256
    saved = stored_record(runtime, record.backup_id)
    assert saved.replica == "ok"
    assert saved.replica_detail is not None
    assert saved.replica_detail.bucket == replica_bucket(runtime)
    assert saved.replica_detail.region == REPLICA_REGION
    assert saved.replica_detail.version_id == head["VersionId"]
    assert report.status == "ok", report.problems
    assert (report.checked, report.counts["ok"], report.lag_seconds) == (1, 1, 0.0)
    assert latest_replication_check(runtime, "app") == report
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["ReplicaMissing"] == 0
    assert metrics["ReplicaMismatch"] == 0
    assert metrics["ReplicationLagSeconds"] == 0


def test_deleted_replica_is_reported_missing(
    make_config: Any, admin_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a replicated backup whose replica was deleted since, and a subscriber on the topic
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    record = replicate_backup(runtime, synthetic_backup(runtime, timedelta(hours=1)))
    assert record.replica == "ok"
    replica_s3(runtime).delete_object(Bucket=replica_bucket(runtime), Key=record.key)
    notices = subscribe(runtime)

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then the backup is missing everywhere a user looks: report, record, catalog, metric, alert
    assert report.status == "failure"
    assert report.missing == [record.backup_id]
    assert problem_checks(report)["replica-missing"] == "critical"
    assert report.lag_seconds >= 3600 - 10
    assert latest_replication_check(runtime, "app") == report
    assert stored_record(runtime, record.backup_id).replica == "missing"
    assert emitted_metrics(capsys.readouterr().out)["ReplicaMissing"] == 1
    [notice] = notices()
    assert (notice["source"], notice["severity"], notice["status"]) == (
        "replication-check",
        "critical",
        "failure",
    )
    assert notice["details"]["missing"] == [record.backup_id]


def test_a_fresh_replica_deleted_after_it_was_seen_is_missing_at_once(
    make_config: Any, admin_dsn: str
) -> None:
    # Given a backup a minute old (inside max_lag) whose replica the copy verified, then was deleted
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    record = replicate_backup(runtime, synthetic_backup(runtime, timedelta(minutes=1)))
    assert record.replica == "ok"
    replica_s3(runtime).delete_object(Bucket=replica_bucket(runtime), Key=record.key)

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then it is missing and critical now, not pending until max_lag has passed
    assert report.status == "failure"
    assert report.missing == [record.backup_id]
    assert report.pending == []
    assert problem_checks(report)["replica-missing"] == "critical"
    assert stored_record(runtime, record.backup_id).replica == "missing"


@pytest.mark.parametrize("keep_metadata", [False, True], ids=["without-metadata", "metadata-copied-along"])
def test_replica_overwritten_with_other_bytes_of_same_size_is_mismatched(
    make_config: Any, admin_dsn: str, keep_metadata: bool
) -> None:
    # Given a replicated backup whose replica was overwritten with other bytes of the same size
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    record = replicate_backup(runtime, synthetic_backup(runtime, timedelta(hours=1)))
    assert record.replica == "ok" and record.size_bytes is not None
    metadata = {"sha256": record.sha256 or ""} if keep_metadata else {}
    replica_s3(runtime).put_object(
        Bucket=replica_bucket(runtime),
        Key=record.key,
        Body=secrets.token_bytes(record.size_bytes),
        Metadata=metadata,
    )

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then the replica is read, hashed and reported mismatched
    assert report.status == "failure"
    assert report.mismatched == [record.backup_id]
    assert problem_checks(report)["replica-mismatch"] == "critical"
    assert "read from the object" in next(p.detail for p in report.problems if p.check == "replica-mismatch")
    assert stored_record(runtime, record.backup_id).replica == "mismatch"


def test_replica_without_metadata_is_hashed_and_ok(make_config: Any, admin_dsn: str) -> None:
    # Given a backup copied by another tool: right bytes, no metadata, never verified
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    body = secrets.token_bytes(10_000)
    record = synthetic_backup(runtime, timedelta(hours=1), body)
    replica_s3(runtime).put_object(Bucket=replica_bucket(runtime), Key=record.key, Body=body)
    replica_s3(runtime).put_object(Bucket=replica_bucket(runtime), Key=record.manifest_key, Body=b"{}")

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then reading the object proves it identical, and that version is recorded as verified
    assert report.status == "ok", report.problems
    version = replica_s3(runtime).head_object(Bucket=replica_bucket(runtime), Key=record.key)["VersionId"]
    saved = stored_record(runtime, record.backup_id)
    assert saved.replica == "ok"
    assert saved.replica_detail is not None and saved.replica_detail.version_id == version


def test_failed_copy_does_not_fail_the_backup_and_is_reported(make_config: Any, admin_dsn: str) -> None:
    # Given a replica bucket that does not exist
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(with_replica(config, bucket=f"dr-nowhere-{secrets.token_hex(4)}"))
    record = synthetic_backup(runtime, timedelta(minutes=30))

    # When the backup is copied, and later checked
    replicated = replicate_backup(runtime, record)
    report = check_replication(runtime, "app")

    # Then the backup stays completed, the copy is recorded failed with its reason, the check fails
    saved = stored_record(runtime, record.backup_id)
    assert saved.status == "completed"
    assert replicated.replica == "failed"
    assert replicated.replica_detail is not None and replicated.replica_detail.error is not None
    assert "NoSuchBucket" in replicated.replica_detail.error
    assert report.status == "failure"
    assert report.missing == [record.backup_id]
    checks = problem_checks(report)
    assert checks["replica-bucket"] == "critical"
    assert "copy after the backup failed" in next(
        p.detail for p in report.problems if p.check == "replica-missing"
    )


def test_large_object_multipart_copy_keeps_metadata_and_bytes(make_config: Any, admin_dsn: str) -> None:
    # Given an object bigger than the multipart threshold (lowered to S3's 5 MiB minimum part)
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    body = secrets.token_bytes(11 * MiB + 123)
    sha256 = hashlib.sha256(body).hexdigest()
    source = runtime.clients.s3(PRIMARY_REGION)
    source.put_object(
        Bucket=config.storage.bucket,
        Key="big.dump",
        Body=body,
        Metadata={"backup-id": "b1"},
        Tagging=f"sha256={sha256}",
    )

    # When it is copied as copy mode copies a large dump
    copy_object(
        runtime.buckets.bucket(config.storage.bucket, PRIMARY_REGION),
        runtime.buckets.bucket(replica_bucket(runtime), REPLICA_REGION),
        "big.dump",
        parts=CopyParts(threshold=5 * MiB, part_size=5 * MiB),
    )

    # Then the replica has the same bytes and keeps the metadata and tags
    copied = replica_s3(runtime).get_object(Bucket=replica_bucket(runtime), Key="big.dump")
    assert copied["Metadata"] == {"backup-id": "b1"}
    assert copied["ETag"].strip('"').endswith("-3")  # really copied in parts
    assert object_tags(replica_s3(runtime), replica_bucket(runtime), "big.dump") == {"sha256": sha256}
    assert hashlib.sha256(copied["Body"].read()).hexdigest() == sha256


def test_copy_not_yet_there_is_pending_then_missing_past_max_lag(make_config: Any, admin_dsn: str) -> None:
    # Given a backup that was never copied
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    record = synthetic_backup(runtime, timedelta(0))

    # When it is checked at once, and again past max_lag (15m)
    early = check_replication(runtime, "app")
    later(runtime, timedelta(minutes=20))
    late = check_replication(runtime, "app")

    # Then it is pending (the copy may be running) first, missing after
    assert early.status == "ok" and early.pending == [record.backup_id]
    assert late.status == "failure" and late.missing == [record.backup_id]
    assert late.lag_seconds >= 20 * 60 - 10


def test_unversioned_replica_bucket_is_reported(make_config: Any, admin_dsn: str) -> None:
    # Given a replicated backup and a replica bucket whose versioning was suspended
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    replicate_backup(runtime, synthetic_backup(runtime, timedelta(hours=1)))
    replica_s3(runtime).put_bucket_versioning(
        Bucket=replica_bucket(runtime), VersioningConfiguration={"Status": "Suspended"}
    )

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then versioning is reported (a warning in copy mode: the copy is there, but unprotected)
    assert report.status == "warning"
    assert problem_checks(report) == {"versioning": "warning"}
    assert replica_bucket(runtime) in report.problems[0].detail


def versioned_bucket_in_primary_region(config: Config) -> str:
    bucket = f"dr-same-region-{secrets.token_hex(4)}"
    s3 = build_runtime(config).clients.s3(PRIMARY_REGION)
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def test_replica_in_the_primary_region_is_reported(make_config: Any, admin_dsn: str) -> None:
    # Given a replica bucket in the primary's own region
    config, _ = make_config(admin_dsn)
    same_region_bucket = versioned_bucket_in_primary_region(config)
    runtime = build_runtime(with_replica(config, bucket=same_region_bucket, region=PRIMARY_REGION))

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then it fails: one regional outage would take both copies
    assert report.status == "failure"
    assert problem_checks(report) == {"replica-region": "critical"}


def test_replica_bucket_elsewhere_than_configured_is_reported(make_config: Any, admin_dsn: str) -> None:
    # Given a config that says the replica bucket is in eu-west-1 while it lives in us-east-1
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(with_replica(config, bucket=versioned_bucket_in_primary_region(config)))

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then the real location is what counts
    details = [p.detail for p in report.problems if p.check == "replica-region"]
    assert any(f"is in {PRIMARY_REGION}, not in {REPLICA_REGION}" in detail for detail in details)


def test_backups_older_than_the_window_are_not_checked(make_config: Any, admin_dsn: str) -> None:
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    synthetic_backup(runtime, timedelta(days=8))
    recent = replicate_backup(runtime, synthetic_backup(runtime, timedelta(days=1)))

    report = check_replication(runtime, "app")

    assert report.checked == 1 and report.counts["ok"] == 1
    assert stored_record(runtime, recent.backup_id).replica == "ok"


# crr mode -----------------------------------------------------------------------


def test_crr_replication_status_failed_is_critical(make_config: Any, admin_dsn: str) -> None:
    # Given crr mode with its rule, and S3 reporting the backup's replication FAILED
    config, _ = make_config(admin_dsn)
    runtime = crr_runtime(config)
    record = synthetic_backup(runtime, timedelta(minutes=1))
    report_replication_status(runtime, "FAILED")

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then it is critical at once, without waiting for max_lag
    assert report.status == "failure"
    assert report.failed == [record.backup_id]
    assert problem_checks(report) == {"replication-failed": "critical"}
    assert stored_record(runtime, record.backup_id).replica == "failed"


def test_crr_pending_escalates_from_ok_to_warning_to_critical(make_config: Any, admin_dsn: str) -> None:
    # Given crr mode and a backup that S3 still reports PENDING (max_lag 15m)
    config, _ = make_config(admin_dsn)
    runtime = crr_runtime(config)
    record = synthetic_backup(runtime, timedelta(0))
    report_replication_status(runtime, "PENDING")

    # When it is checked within max_lag, past it, and past twice it
    statuses = []
    for minutes in (5, 20, 40):
        later(runtime, timedelta(minutes=minutes))
        report = check_replication(runtime, "app")
        statuses.append((report.status, problem_checks(report).get("replication-lag")))

    # Then the lag escalates
    assert statuses == [("ok", None), ("warning", "warning"), ("failure", "critical")]
    assert report.pending == [record.backup_id]
    assert report.lag_seconds >= 40 * 60 - 10


def test_crr_replicated_object_is_ok(make_config: Any, admin_dsn: str) -> None:
    # Given crr mode, S3 reporting COMPLETED, and the replica that CRR made (same version id)
    config, _ = make_config(admin_dsn)
    runtime = crr_runtime(config)
    body = secrets.token_bytes(2048)
    record = synthetic_backup(runtime, timedelta(hours=2), body)
    for key in (record.key, record.manifest_key):
        source = runtime.clients.s3(PRIMARY_REGION).get_object(Bucket=record.bucket, Key=key)
        replica_s3(runtime).put_object(
            Bucket=replica_bucket(runtime),
            Key=key,
            Body=source["Body"].read(),
            Metadata=source["Metadata"],
            Tagging=urlencode(object_tags(runtime.clients.s3(PRIMARY_REGION), record.bucket, key)),
        )
    report_replication_status(runtime, "COMPLETED")

    # When the replication is checked
    report = check_replication(runtime, "app")

    # Then all is well (moto gives the replica a new version id, so its bytes were read: still equal)
    assert report.status == "ok", report.problems
    assert report.counts["ok"] == 1


def test_crr_without_replication_rule_is_reported(make_config: Any, admin_dsn: str) -> None:
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(with_replica(config, mode="crr"))

    report = check_replication(runtime, "app")

    assert report.status == "failure"
    assert problem_checks(report) == {"replication-config": "critical"}


# the scheduled run and the command line ------------------------------------------


def test_scheduled_check_runs_once_per_event(make_config: Any, admin_dsn: str) -> None:
    config, _ = make_config(admin_dsn)
    runtime = build_runtime(config)
    replicate_backup(runtime, synthetic_backup(runtime, timedelta(hours=1)))
    event = ScheduledEvent.now("app")

    first = run_scheduled_replication_check(runtime, event)
    again = run_scheduled_replication_check(build_runtime(config), event)

    assert first.status == "ok"
    assert again == first


def test_cli_json_exits_1_on_missing_replica(
    make_config: Any, admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backup whose replica is missing, and EMF metrics kept off stdout as on a terminal
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    config, path = make_config(admin_dsn)
    record = synthetic_backup(build_runtime(config), timedelta(hours=1))

    # When the check runs from the command line
    result = CliRunner().invoke(app, ["run", "replication-check", "--config", str(path), "--json"])
    table = CliRunner().invoke(app, ["run", "replication-check", "--config", str(path), "--target", "app"])

    # Then it exits 1 with one JSON document naming the missing backup, and the table says so too
    assert result.exit_code == 1, result.output
    [report] = json.loads(result.stdout)["reports"]
    assert report["status"] == "failure"
    assert report["missing"] == [record.backup_id]
    assert table.exit_code == 1
    assert "replica-missing" in table.stdout


def test_cli_without_replica_is_bad_configuration(
    make_config: Any, admin_dsn: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    config, _ = make_config(admin_dsn)
    path = tmp_path / "no-replica.yaml"
    path.write_text(
        dump_config(
            config.model_copy(update={"storage": config.storage.model_copy(update={"replica": None})})
        )
    )

    result = CliRunner().invoke(app, ["run", "replication-check", "--config", str(path)])

    assert result.exit_code == 2
    assert "storage.replica is not configured" in result.stderr
