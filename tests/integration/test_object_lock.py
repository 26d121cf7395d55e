"""Object Lock on the primary bucket and the replica, on moto's server over HTTP (moto enforces
retention on a versioned delete, as S3 does; it enforces no IAM, so every refusal below comes
from the lock itself).

moto's clock cannot be moved, so "the lock has run out" is set up by writing a retention date
in the past, which S3 itself would refuse (in GOVERNANCE mode without s3:BypassGovernanceRetention).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from botocore.exceptions import ClientError
from test_archive import NO_SOURCE, at, seed_backup, versions
from typer.testing import CliRunner

from drsentry.core.records import BackupRecord, iso, parse_iso, utc_now
from drsentry.jobs.archive.job import archive_target
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.local.sample import drop_database
from drsentry.operator.cli.app import app

pytestmark = pytest.mark.integration


def lock_of(s3: Any, bucket: str, key: str) -> tuple[str, datetime]:
    head = s3.head_object(Bucket=bucket, Key=key)
    return head["ObjectLockMode"], head["ObjectLockRetainUntilDate"]


def set_lock(runtime: Runtime, record: BackupRecord, until: datetime) -> None:
    """The primary and replica copies locked (GOVERNANCE) until `until`, and the record saying so."""
    config = runtime.config
    assert config.storage.replica is not None
    for s3, bucket in (
        (runtime.clients.s3(), record.bucket),
        (runtime.clients.s3(config.storage.replica.region), config.storage.replica.bucket),
    ):
        for key in (record.key, record.manifest_key, *([record.globals.key] if record.globals else [])):
            s3.put_object_retention(
                Bucket=bucket, Key=key, Retention={"Mode": "GOVERNANCE", "RetainUntilDate": until}
            )
    runtime.catalog.update_backup(
        "app", record.backup_id, {"retain_until": iso(until), "lock_mode": "GOVERNANCE"}
    )


def week_start(record: BackupRecord) -> datetime:
    """Monday 00:00 UTC of the ISO week the backup started in."""
    started = parse_iso(record.started_at)
    return datetime(started.year, started.month, started.day, tzinfo=UTC) - timedelta(days=started.weekday())


@pytest.fixture
def runtime(make_config: Any) -> Runtime:
    config, _ = make_config(NO_SOURCE)
    return build_runtime(config)


def test_a_completed_backup_is_locked_until_its_longest_primary_slot_ends_and_cannot_be_deleted(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given the first backup of a target (it fills every slot; the archive copy serves the monthly one)
    config, _ = make_config(source_db)
    record = backup_target(build_runtime(config), "app")
    assert record.status == "completed", record.error

    # Then its lock ends when its weekly slot does: the start of its ISO week plus 365 days
    expected = week_start(record) + timedelta(days=365)
    assert record.tier == "monthly"
    assert record.retain_until == iso(expected)
    assert record.lock_mode == "GOVERNANCE"
    # on the dump, its manifest and its roles object, in the primary bucket and the replica
    assert record.globals is not None
    replica = config.storage.replica
    for s3, bucket in ((clients.s3(), config.storage.bucket), (clients.s3(replica.region), replica.bucket)):
        for key in (record.key, record.manifest_key, record.globals.key):
            assert lock_of(s3, bucket, key) == ("GOVERNANCE", expected), (bucket, key)
    assert json.loads(clients.s3().get_object(Bucket=record.bucket, Key=record.manifest_key)["Body"].read())[
        "retain_until"
    ] == iso(expected)
    assert build_runtime(config).catalog.get_backup(record.backup_id).retain_until == iso(expected)

    # When anyone (the archive role, say) deletes that version before then
    version = clients.s3().head_object(Bucket=record.bucket, Key=record.key)["VersionId"]
    with pytest.raises(ClientError, match="AccessDenied"):
        clients.s3().delete_object(Bucket=record.bucket, Key=record.key, VersionId=version)

    # Then it is refused and the dump is still there, byte for byte
    body = clients.s3().get_object(Bucket=record.bucket, Key=record.key, VersionId=version)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record.sha256


def test_the_archive_run_expires_nothing_still_locked_and_reports_it(runtime: Runtime, clients: Any) -> None:
    # Given two backups of an hour 20 days ago (the second fills no slot) and today's; the
    # second is still locked for a day
    seed_backup(runtime, at(20, 0, 5))
    locked = seed_backup(runtime, at(20, 0, 35))
    seed_backup(runtime, utc_now() - timedelta(minutes=10))
    until = (utc_now() + timedelta(days=1)).replace(microsecond=0)
    set_lock(runtime, locked, until)

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then the locked backup is due but not expired, and the report says so (not a failure)
    row = next(row for row in report.decisions if row.backup_id == locked.backup_id)
    assert (row.action, row.outcome) == ("expire", "locked")
    assert f"until {iso(until)}" in (row.detail or "")
    assert report.locked == 1 and report.expired == 0 and report.ok
    assert "1 still under Object Lock" in report.summary()
    # and every copy of it is still there, its record `completed`
    replica = runtime.config.storage.replica
    assert replica is not None
    for key in (locked.key, locked.manifest_key):
        assert versions(clients.s3(), locked.bucket, key) != []
        assert versions(clients.s3(replica.region), replica.bucket, key) != []
    assert runtime.catalog.get_backup(locked.backup_id).status == "completed"


def test_once_the_lock_has_run_out_the_backup_expires(runtime: Runtime, clients: Any) -> None:
    seed_backup(runtime, at(20, 0, 5))
    due = seed_backup(runtime, at(20, 0, 35))
    seed_backup(runtime, utc_now() - timedelta(minutes=10))
    set_lock(runtime, due, (utc_now() - timedelta(minutes=1)).replace(microsecond=0))

    report = archive_target(runtime, "app")

    row = next(row for row in report.decisions if row.backup_id == due.backup_id)
    assert (row.action, row.outcome) == ("expire", "done")
    assert versions(clients.s3(), due.bucket, due.key) == []
    assert runtime.catalog.get_backup(due.backup_id).status == "expired"


def test_a_backup_handed_a_longer_slot_gets_a_later_lock(runtime: Runtime, clients: Any) -> None:
    # Given a backup recorded with its hour's lock only (as when the catalog could not be read
    # at backup time), which the catalog shows is the first of its day, ISO week and month
    record = seed_backup(runtime, at(2, 3, 5))
    seed_backup(runtime, utc_now() - timedelta(minutes=10))
    hour_end = datetime.fromisoformat(record.started_at[:13] + ":00:00+00:00") + timedelta(days=7)
    set_lock(runtime, record, hour_end)

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then its primary and replica copies are locked until its weekly slot ends, a later date
    expected = week_start(record) + timedelta(days=365)
    row = next(row for row in report.decisions if row.backup_id == record.backup_id)
    assert row.retain_until == iso(expected) and report.extended == 1, row
    replica = runtime.config.storage.replica
    assert replica is not None
    for s3, bucket in ((clients.s3(), record.bucket), (clients.s3(replica.region), replica.bucket)):
        for key in (record.key, record.manifest_key):
            assert lock_of(s3, bucket, key) == ("GOVERNANCE", expected)
    assert runtime.catalog.get_backup(record.backup_id).retain_until == iso(expected)
    # and a second run changes nothing (never shortened, never extended twice)
    assert archive_target(runtime, "app").extended == 0
    assert lock_of(clients.s3(), record.bucket, record.key)[1] == expected


def test_an_archived_monthly_loses_its_primary_copy_with_its_shorter_slots_and_restores_from_the_archive(
    source_db: str, make_config: Any, clients: Any, admin_dsn: str, tmp_path: Any
) -> None:
    # Given a real backup, archived (the first of its month)
    config, path = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert archive_target(runtime, "app").archived == 1
    # ... 400 days later: its weekly, daily and hourly slots have ended and so has its primary lock
    long_ago = utc_now() - timedelta(days=400)
    runtime.catalog.update_backup("app", record.backup_id, {"started_at": iso(long_ago)})
    set_lock(runtime, record, (utc_now() - timedelta(minutes=1)).replace(microsecond=0))
    seed_backup(runtime, utc_now() - timedelta(minutes=10))

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then the primary and replica copies are gone, the archive copy stays, the record is completed
    row = next(row for row in report.decisions if row.backup_id == record.backup_id)
    assert (row.action, row.outcome) == ("expire_primary", "done"), row
    assert report.primary_expired == 1
    replica = config.storage.replica
    for key in (record.key, record.manifest_key):
        assert versions(clients.s3(), record.bucket, key) == []
        assert versions(clients.s3(replica.region), replica.bucket, key) == []
    assert versions(clients.s3(), config.storage.archive.bucket, record.key) != []
    stored = runtime.catalog.get_backup(record.backup_id)
    assert stored.status == "completed" and stored.primary_expired_at is not None
    # and a second run keeps it
    assert archive_target(runtime, "app").primary_expired == 0

    # When it is restored: the first attempt asks S3 to restore the archive copy, the second restores
    target_db = "from_archive_" + record.backup_id[-8:]
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'create database "{target_db}"')
    target_dsn = admin_dsn.rsplit("/", 1)[0] + f"/{target_db}"
    try:
        command = ["restore", record.backup_id, "--to", target_dsn, "--yes", "--config", str(path)]
        first = CliRunner().invoke(app, command)
        assert first.exit_code == 1 and "restore requested" in first.output, first.output
        second = CliRunner().invoke(app, command)
        assert second.exit_code == 0, second.output

        # Then the database holds the backup's rows
        with psycopg.connect(target_dsn) as conn:
            for table in ("organizations", "appointments"):
                count = conn.execute(f'select count(*) from "{table}"').fetchone()
                assert count is not None and count[0] == record.tables[table], table
    finally:
        drop_database(admin_dsn, target_db)
