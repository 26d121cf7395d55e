"""Archive and GFS retention on moto's server over HTTP.

Old backups are written directly (object with its metadata, manifest, replica copy and
catalog record, as backup.py and the replica copy leave them), because pg_dump cannot
produce a backup from last year; one test archives a real backup from `backup_target`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import secrets
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from drsentry.adapters.buckets import Bucket, CopyParts, MiB
from drsentry.core.config import Config, dump_config
from drsentry.core.errors import BadInput, Interrupted, ObjectArchived
from drsentry.core.events import ScheduledEvent, scheduled_event
from drsentry.core.records import (
    BackupRecord,
    ReplicaDetail,
    VerificationRecord,
    iso,
    new_backup_id,
    utc_now,
)
from drsentry.jobs.archive import copy as archive_copy
from drsentry.jobs.archive import run as archive_run
from drsentry.jobs.archive.access import (
    ArchiveNotReadable,
    archive_readable,
    ensure_archive_readable,
    explain_unreadable,
    request_archive_restore,
)
from drsentry.jobs.archive.job import archive_target, run_scheduled_archive
from drsentry.jobs.archive.report import MAX_RESULT_ROWS, DecisionRow, result_rows
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.backup.rules import object_keys
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.operator.cli.app import app

pytestmark = pytest.mark.integration

NO_SOURCE = "postgresql://nobody@127.0.0.1:1/none"  # these tests never dump a database
ROOT = Path(__file__).resolve().parents[2]


# helpers ------------------------------------------------------------------------


def with_archive(config: Config, **changes: Any) -> Config:
    """The same configuration with other archive settings (config models are frozen)."""
    assert config.storage.archive is not None
    archive = config.storage.archive.model_copy(update=changes)
    return config.model_copy(update={"storage": config.storage.model_copy(update={"archive": archive})})


def seed_backup(
    runtime: Runtime, started: datetime, *, body: bytes | None = None, status: str = "completed"
) -> BackupRecord:
    """A backup as backup.py and the replica copy leave it, started at `started`."""
    config = runtime.config
    body = body if body is not None else secrets.token_bytes(2048)
    backup_id = new_backup_id(started)
    key, manifest_key = object_keys(config.storage.prefix, "app", backup_id)
    sha256 = hashlib.sha256(body).hexdigest()
    record = BackupRecord(
        target="app",
        backup_id=backup_id,
        status=status,  # type: ignore[arg-type]
        started_at=iso(started),
        finished_at=iso(started + timedelta(seconds=5)),
        size_bytes=len(body) if status == "completed" else None,
        sha256=sha256 if status == "completed" else None,
        bucket=config.storage.bucket,
        key=key,
        manifest_key=manifest_key,
    )
    if status == "completed":
        assert config.storage.replica is not None
        replica_s3 = runtime.clients.s3(config.storage.replica.region)
        manifest = json.dumps(record.model_dump()).encode()
        metadata = {"backup-id": backup_id, "target": "app"}
        tagging = f"sha256={sha256}&size-bytes={len(body)}"
        for s3, bucket in (
            (runtime.store.s3, config.storage.bucket),
            (replica_s3, config.storage.replica.bucket),
        ):
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=body,
                Metadata=metadata,
                Tagging=tagging,
                ServerSideEncryption="AES256",
            )
            s3.put_object(Bucket=bucket, Key=manifest_key, Body=manifest, ServerSideEncryption="AES256")
        record = record.model_copy(
            update={
                "replica": "ok",
                "replica_detail": ReplicaDetail(
                    bucket=config.storage.replica.bucket,
                    region=config.storage.replica.region,
                ),
            }
        )
    runtime.catalog.put_backup(record)
    return record


def versions(s3: Any, bucket: str, key: str) -> list[str]:
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    return [
        v["VersionId"]
        for v in [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]
        if v["Key"] == key
    ]


def bucket_state(runtime: Runtime) -> dict[str, list[tuple[str, str]]]:
    config = runtime.config
    assert config.storage.replica is not None and config.storage.archive is not None
    state = {}
    for region, bucket in (
        (config.storage.region, config.storage.bucket),
        (config.storage.replica.region, config.storage.replica.bucket),
        (config.storage.region, config.storage.archive.bucket),
    ):
        listing = runtime.clients.s3(region).list_object_versions(Bucket=bucket)
        state[bucket] = sorted((v["Key"], v["VersionId"]) for v in listing.get("Versions", []))
    return state


def at(days_ago: int, hour: int, minute: int = 5) -> datetime:
    """A moment `days_ago` days back, at a fixed time of day (UTC)."""
    day = (utc_now() - timedelta(days=days_ago)).date()
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


@pytest.fixture
def runtime(make_config: Any) -> Runtime:
    config, _ = make_config(NO_SOURCE)
    return build_runtime(config)


@pytest.fixture
def slow_restores(aws_endpoint: str) -> Iterator[None]:
    """moto reports a restore as in progress for a few lookups of the object, then done."""

    def post(path: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(
            f"{aws_endpoint}/moto-api/state-manager/{path}", data=json.dumps(body).encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=10):
            pass

    post(
        "set-transition",
        {"model_name": "s3::keyrestore", "transition": {"progression": "manual", "times": 3}},
    )
    try:
        yield
    finally:
        post("unset-transition", {"model_name": "s3::keyrestore"})


# archive ------------------------------------------------------------------------


def test_real_backup_lands_in_the_archive_with_class_lock_and_checksum(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given a real backup: the first of the month, so it fills the monthly slot
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then the dump is in the archive bucket in DEEP_ARCHIVE, locked, with the catalog's checksum
    assert report.ok and report.archived == 1, report
    archive = config.storage.archive
    head = clients.s3().head_object(Bucket=archive.bucket, Key=record.key)
    assert head["StorageClass"] == "DEEP_ARCHIVE"
    assert head["ContentLength"] == record.size_bytes
    assert head["Metadata"]["backup-id"] == record.backup_id  # (moto reads no tags of a DEEP_ARCHIVE object)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    lock_days = (head["ObjectLockRetainUntilDate"] - datetime.now(UTC)).total_seconds() / 86400
    assert 2554.9 < lock_days <= 2555
    assert head["ServerSideEncryption"] == "AES256"
    # and the manifest beside it stays readable (STANDARD) and describes this backup
    manifest_head = clients.s3().head_object(Bucket=archive.bucket, Key=record.manifest_key)
    assert "StorageClass" not in manifest_head  # S3 omits it for STANDARD
    assert manifest_head["ObjectLockMode"] == "COMPLIANCE"
    body = clients.s3().get_object(Bucket=archive.bucket, Key=record.manifest_key)["Body"].read()
    assert json.loads(body)["sha256"] == record.sha256
    # and the record says archived, with what was checked
    stored = runtime.catalog.get_backup(record.backup_id)
    assert stored.archive is not None
    assert stored.archive.storage_class == "DEEP_ARCHIVE"
    assert stored.archive.sha256 == record.sha256
    assert stored.archive.lock_mode == "COMPLIANCE"
    assert stored.archive.retain_until == iso(head["ObjectLockRetainUntilDate"])
    assert stored.archive.verified_by == "tag"
    assert stored.archive.version_id == head["VersionId"]
    # and the archived dump cannot be read without a restore
    with pytest.raises(ClientError, match="InvalidObjectState"):
        clients.s3().get_object(Bucket=archive.bucket, Key=record.key)


def test_large_backup_is_copied_in_parts_and_still_locked(
    runtime: Runtime, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a 12 MiB backup and a multipart threshold of 5 MiB (the path objects > 5 GB take),
    # archived to GLACIER_IR, whose tags can be read back here
    runtime.config = with_archive(runtime.config, storage_class="GLACIER_IR")
    monkeypatch.setattr(archive_copy, "COPY_PARTS", CopyParts(threshold=5 * MiB, part_size=5 * MiB))
    body = secrets.token_bytes(12 * MiB)
    record = seed_backup(runtime, utc_now() - timedelta(minutes=5), body=body)

    # When it is archived
    report = archive_target(runtime, "app")

    # Then the copy came in parts, matches, carries the tags, and is locked even though a multipart copy on
    # this endpoint drops the lock (drsentry reads the lock back and sets it)
    assert report.ok and report.archived == 1, report
    archive = runtime.config.storage.archive
    head = clients.s3().head_object(Bucket=archive.bucket, Key=record.key)
    assert head["ETag"].strip('"').endswith("-3")
    assert head["ContentLength"] == len(body)
    assert Bucket(clients.s3(), archive.bucket).tags(record.key)["sha256"] == hashlib.sha256(body).hexdigest()
    assert head["ObjectLockMode"] == "COMPLIANCE"


def test_glacier_ir_copy_without_checksum_tag_is_read_and_hashed(runtime: Runtime, clients: Any) -> None:
    # Given GLACIER_IR (readable at once) and a primary object without its sha256 tag
    runtime.config = with_archive(runtime.config, storage_class="GLACIER_IR", lock_mode="GOVERNANCE")
    record = seed_backup(runtime, utc_now() - timedelta(minutes=5))
    clients.s3().delete_object_tagging(Bucket=record.bucket, Key=record.key)

    report = archive_target(runtime, "app")

    assert report.ok and report.archived == 1, report
    stored = runtime.catalog.get_backup(record.backup_id)
    assert stored.archive is not None
    assert stored.archive.verified_by == "read"
    assert stored.archive.lock_mode == "GOVERNANCE"
    head = clients.s3().head_object(Bucket=stored.archive.bucket, Key=record.key)
    assert head["StorageClass"] == "GLACIER_IR"
    assert archive_readable(runtime, stored).state == "readable"


def test_a_primary_object_that_does_not_match_the_catalog_is_not_archived(
    runtime: Runtime, clients: Any
) -> None:
    # Given a monthly backup whose stored object lost bytes
    record = seed_backup(runtime, utc_now() - timedelta(minutes=5))
    clients.s3().put_object(Bucket=record.bucket, Key=record.key, Body=b"truncated")

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then nothing is archived, the failure is reported, and the record does not say archived
    assert report.failed == 1 and report.archived == 0
    row = next(row for row in report.decisions if row.backup_id == record.backup_id)
    assert row.outcome == "failed"
    assert "the catalog says" in (row.detail or "")
    assert runtime.catalog.get_backup(record.backup_id).archive is None
    assert versions(clients.s3(), runtime.config.storage.archive.bucket, record.key) == []


# expiry -------------------------------------------------------------------------


def seed_month_of_backups(runtime: Runtime) -> dict[str, BackupRecord]:
    """A few backups 20 days ago (a kept daily one, two to expire), and today's."""
    return {
        "daily": seed_backup(runtime, at(20, 0, 5)),
        "hourly_a": seed_backup(runtime, at(20, 1, 5)),
        "hourly_b": seed_backup(runtime, at(20, 1, 35)),
        "failed": seed_backup(runtime, at(20, 2, 5), status="failed"),
        "newest": seed_backup(runtime, utc_now() - timedelta(minutes=10)),
    }


def test_expired_backups_are_gone_from_primary_and_replica_and_marked(runtime: Runtime, clients: Any) -> None:
    # Given backups of 20 days ago, one of them with a second version of its object
    seeded = seed_month_of_backups(runtime)
    doomed = [seeded["hourly_a"], seeded["hourly_b"]]
    clients.s3().put_object(Bucket=doomed[0].bucket, Key=doomed[0].key, Body=b"an older upload")
    assert len(versions(clients.s3(), doomed[0].bucket, doomed[0].key)) == 2

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then the two non-first backups of a 20-day-old day are expired everywhere ...
    assert report.ok, report
    assert report.expired == 2
    replica = runtime.config.storage.replica
    assert replica is not None
    reasons = [
        f"hourly slot {doomed[0].started_at[:13]} is older than 7d",
        f"not the first completed backup of hour {doomed[1].started_at[:13]}",
    ]
    for record, reason in zip(doomed, reasons, strict=True):
        for key in (record.key, record.manifest_key):
            assert versions(clients.s3(), record.bucket, key) == []
            assert versions(clients.s3(replica.region), replica.bucket, key) == []
        stored = runtime.catalog.get_backup(record.backup_id)
        assert stored.status == "expired"
        assert stored.expired_at is not None
        assert stored.expire_reason == reason
    # ... and the first backup of that day, today's, and the failed record are untouched
    for name in ("daily", "newest"):
        kept = seeded[name]
        assert runtime.catalog.get_backup(kept.backup_id).status == "completed"
        assert versions(clients.s3(), kept.bucket, kept.key) != []
    assert runtime.catalog.get_backup(seeded["failed"].backup_id).status == "failed"


def test_a_second_run_right_after_the_first_does_nothing(runtime: Runtime) -> None:
    seed_month_of_backups(runtime)
    first = archive_target(runtime, "app")
    assert first.expired == 2 and first.archived >= 1
    before = bucket_state(runtime)

    second = archive_target(runtime, "app")

    assert second.ok
    assert second.counts["archive"] == second.counts["expire"] == 0
    assert second.archived == second.expired == 0
    assert bucket_state(runtime) == before


def test_dry_run_prints_the_plan_and_changes_nothing(runtime: Runtime) -> None:
    seeded = seed_month_of_backups(runtime)
    before_buckets = bucket_state(runtime)
    before_records = sorted(r.model_dump_json() for r in runtime.catalog.iter_backups("app"))

    result = run_scheduled_archive(runtime, ScheduledEvent.now("app", dry_run=True))

    (report,) = result.records
    assert result.dry_run is True
    rows = {row.backup_id: row for row in report.decisions}
    assert rows[seeded["hourly_a"].backup_id].action == "expire"
    assert rows[seeded["hourly_a"].backup_id].outcome == "planned"
    assert f"daily {seeded['daily'].started_at[:10]}" in rows[seeded["daily"].backup_id].slots
    assert report.archived == report.expired == 0
    assert bucket_state(runtime) == before_buckets
    assert sorted(r.model_dump_json() for r in runtime.catalog.iter_backups("app")) == before_records


def test_dry_run_on_the_command_line_prints_the_plan_table(runtime: Runtime, tmp_path: Any) -> None:
    seeded = seed_month_of_backups(runtime)
    path = tmp_path / "drsentry.yaml"
    path.write_text(dump_config(runtime.config))

    result = CliRunner().invoke(
        app, ["run", "archive", "--config", str(path), "--dry-run"], terminal_width=250
    )

    assert result.exit_code == 0, result.output
    assert "dry run: nothing changed" in result.stdout
    line = next(line for line in result.stdout.splitlines() if seeded["hourly_b"].backup_id in line)
    assert "expire" in line and "planned" in line
    assert "expire 2;" in result.stdout
    assert runtime.catalog.get_backup(seeded["hourly_b"].backup_id).status == "completed"


def test_a_real_run_result_fits_in_one_idempotency_record() -> None:
    # 5,000 expiries on a first run over an old catalog: the stored result stays far below
    # DynamoDB's 400 KB item limit
    rows = [
        DecisionRow(
            backup_id=f"20260101T000000000Z-{n:08x}",
            started_at="2026-01-01T00:00:00Z",
            action="expire",
            reason="not the first completed backup of hour 2026-01-01T00",
            outcome="failed",
            detail="s3://dr-primary/backups/app/2026/01/01/x.dump: delete failed: SlowDown: reduce your rate",
        )
        for n in range(5_000)
    ]
    shown, omitted = result_rows(rows, dry_run=False)
    assert len(shown) == MAX_RESULT_ROWS and omitted == 5_000 - len(shown)
    assert len(json.dumps([row.model_dump() for row in shown])) < 300_000


def test_the_newest_verified_backup_survives(runtime: Runtime) -> None:
    # Given a verified backup that is not the first of its hour, 20 days ago
    seeded = seed_month_of_backups(runtime)
    verified = seeded["hourly_b"]
    runtime.catalog.verifications.put(
        VerificationRecord(
            target="app", backup_id=verified.backup_id, verified_at=iso(utc_now()), status="success"
        )
    )

    report = archive_target(runtime, "app")

    row = next(row for row in report.decisions if row.backup_id == verified.backup_id)
    assert (row.action, row.reason) == ("keep", "newest backup that verified success")
    assert runtime.catalog.get_backup(verified.backup_id).status == "completed"


def test_a_locked_object_is_reported_not_forced(runtime: Runtime, clients: Any, tmp_path: Any) -> None:
    # Given a backup past every window whose archive copy is under a legal hold the catalog
    # does not know about (its own retention date has passed)
    old = seed_backup(runtime, utc_now() - timedelta(days=3000))
    seed_backup(runtime, utc_now() - timedelta(minutes=5))
    archive = runtime.config.storage.archive
    s3 = clients.s3()
    for key in (old.key, old.manifest_key):
        s3.put_object(Bucket=archive.bucket, Key=key, Body=b"archived", StorageClass="DEEP_ARCHIVE")
    s3.put_object_legal_hold(Bucket=archive.bucket, Key=old.key, LegalHold={"Status": "ON"})
    runtime.catalog.update_backup(
        "app",
        old.backup_id,
        {
            "archive": {
                "bucket": archive.bucket,
                "key": old.key,
                "manifest_key": old.manifest_key,
                "storage_class": "DEEP_ARCHIVE",
                "retain_until": iso(utc_now() - timedelta(days=1)),
                "archived_at": iso(utc_now() - timedelta(days=2999)),
            }
        },
    )

    # When the archive run expires it (through the CLI, as an operator runs it)
    path = tmp_path / "drsentry.yaml"
    path.write_text(dump_config(runtime.config))
    result = CliRunner().invoke(app, ["run", "archive", "--config", str(path), "--json"])

    # Then the refused delete is reported and the run exits 1 without a traceback ...
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    report = document["targets"][0]
    assert report["refused"] == 1
    row = next(row for row in report["decisions"] if row["backup_id"] == old.backup_id)
    assert row["outcome"] == "refused"
    assert "AccessDenied" in row["detail"] and "never bypasses" in row["detail"]
    # ... the locked version is still there, and nothing else of the backup was deleted
    assert versions(s3, archive.bucket, old.key) != []
    assert versions(s3, old.bucket, old.key) != []
    stored = runtime.catalog.get_backup(old.backup_id)
    assert stored.status == "completed"


def test_a_retried_schedule_does_not_run_twice(runtime: Runtime) -> None:
    seed_month_of_backups(runtime)
    event = ScheduledEvent.now("app")

    first = run_scheduled_archive(runtime, event)
    second = run_scheduled_archive(runtime, event)

    assert second == first
    assert first.records[0].expired == 2


# reading from the archive -------------------------------------------------------


def test_restore_from_deep_archive_goes_through_the_pending_state(
    runtime: Runtime, clients: Any, slow_restores: None
) -> None:
    # Given an archived backup
    record = seed_backup(runtime, utc_now() - timedelta(minutes=5), body=b"pg_dump custom format" * 100)
    assert archive_target(runtime, "app").archived == 1
    record = runtime.catalog.get_backup(record.backup_id)
    assert record.archive is not None

    # When it is read before any restore: a clear message, not InvalidObjectState
    with pytest.raises(ArchiveNotReadable, match="archived in DEEP_ARCHIVE and not restored"):
        ensure_archive_readable(runtime, record)
    with pytest.raises(ClientError, match="InvalidObjectState"):
        clients.s3().get_object(Bucket=record.archive.bucket, Key=record.key)
    # (the bucket adapter says what that means: archived, not readable; the operator gets the why)
    with pytest.raises(ObjectArchived, match="InvalidObjectState") as raw:
        next(runtime.buckets.bucket(record.archive.bucket).iter_chunks(record.key))
    assert "InvalidObjectState" not in str(explain_unreadable(record, raw.value))
    # Expedited does not exist for DEEP_ARCHIVE
    with pytest.raises(BadInput, match="Standard .up to 12 h. or Bulk"):
        request_archive_restore(runtime, record.backup_id, tier="Expedited")

    # When a restore is requested: pending, recorded, with when to come back
    requested = request_archive_restore(runtime, record.backup_id, tier="Standard", days=2)
    assert requested.state == "pending"
    assert requested.message.startswith("archived in DEEP_ARCHIVE; restore requested at ")
    assert requested.message.endswith("Standard tier takes up to 12 h; run again later")
    stored = runtime.catalog.get_backup(record.backup_id)
    assert stored.archive is not None
    assert stored.archive.restore is not None
    assert stored.archive.restore.status == "pending"
    assert stored.archive.restore.tier == "Standard"

    # and reading it meanwhile says so
    with pytest.raises(ArchiveNotReadable, match="restore requested at .*run again later"):
        ensure_archive_readable(runtime, stored)
    assert "restore requested at" in str(explain_unreadable(stored, raw.value))

    # Then S3 reports it in progress, then done: readable, with the catalog's bytes
    states = [archive_readable(runtime, stored).state]
    while states[-1] == "pending" and len(states) < 10:
        states.append(archive_readable(runtime, stored).state)
    assert states[0] == "pending" and states[-1] == "readable", states
    access = archive_readable(runtime, stored)
    assert access.readable_until is not None
    body = clients.s3().get_object(Bucket=access.bucket, Key=access.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record.sha256
    restored = runtime.catalog.get_backup(record.backup_id)
    assert restored.archive is not None
    assert restored.archive.restore is not None
    assert restored.archive.restore.status == "restored"
    # and asking again does not start a second restore
    assert request_archive_restore(runtime, record.backup_id).state == "readable"


def test_a_backup_without_an_archive_copy_cannot_be_restored_from_it(runtime: Runtime) -> None:
    record = seed_backup(runtime, utc_now() - timedelta(minutes=5))
    with pytest.raises(BadInput, match="has no archive copy"):
        request_archive_restore(runtime, record.backup_id)


# the Lambda handler ---------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    remaining_ms: int
    function_name: str = "drsentry-archive"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:drsentry-archive"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def test_the_handler_leaves_what_it_has_no_time_for_to_the_next_run(
    make_config: Any, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the config in SSM, as the deployed function reads it, and backups to expire
    config, path = make_config(NO_SOURCE)
    name = f"/drsentry/config-{config.catalog.table}"
    clients.ssm.put_parameter(Name=name, Value=path.read_text(), Type="String")
    monkeypatch.setenv("DRSENTRY_CONFIG_PARAM", name)
    runtime = build_runtime(config)
    seeded = seed_month_of_backups(runtime)
    spec = importlib.util.spec_from_file_location(
        "archive_handler", ROOT / "functions" / "archive" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    # When it is invoked with 30 s left, every action waits for the next run
    hurried = module.lambda_handler(scheduled_event(), FakeLambdaContext(remaining_ms=30_000))
    report = hurried["targets"][0]
    assert report["deferred"] == report["counts"]["archive"] + report["counts"]["expire"] > 0
    assert runtime.catalog.get_backup(seeded["hourly_a"].backup_id).status == "completed"

    # and with time to spare, it does them
    relaxed = module.lambda_handler(scheduled_event(), FakeLambdaContext(remaining_ms=600_000))
    assert relaxed["targets"][0]["expired"] == 2
    assert runtime.catalog.get_backup(seeded["hourly_a"].backup_id).status == "expired"


def test_a_signal_during_expiries_drops_the_ones_not_started(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given thirty backups of one day 20 days ago: one is kept (daily), the others are due to expire
    for minute in range(30):
        seed_backup(runtime, at(20, minute // 2, 5 + (minute % 2) * 30))
    plan, _ = archive_run.ArchiveRun(runtime, "app").plan()
    due = len(plan.with_action("expire"))
    assert due > 2 * archive_run.EXPIRE_CONCURRENCY  # more than the workers can have taken up
    started: list[str] = []

    def slow_expiry(_runtime: Runtime, record: BackupRecord, _reason: str) -> str:
        started.append(record.backup_id)
        time.sleep(0.3)
        if record.backup_id == started[0]:
            os.kill(os.getpid(), signal.SIGTERM)  # ECS stopping the task, mid-way through the batch
        return "deleted"

    def interrupt(signum: int, _frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name, 128 + signum)

    monkeypatch.setattr(archive_run, "expire_backup", slow_expiry)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        # When SIGTERM arrives while the expiries run side by side
        with pytest.raises(Interrupted) as raised:
            archive_target(runtime, "app")
    finally:
        signal.signal(signal.SIGTERM, previous)
    while any(thread.name.startswith("expire") for thread in threading.enumerate()):
        time.sleep(0.05)

    # Then the run stops: the expiries already running finish (a few requests each), the rest
    # never start, and they are left for the next run
    assert raised.value.exit_code == 143
    # (those running when it arrived, and any a worker took up before the queue was dropped)
    assert 1 <= len(started) <= 2 * archive_run.EXPIRE_CONCURRENCY
