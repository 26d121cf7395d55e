"""Backup against a real PostgreSQL and moto's server over HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import threading
import time
from typing import Any

import psutil
import psycopg
import pytest
import zstandard

from drsentry.adapters import postgres as postgres_adapter
from drsentry.adapters.pgtools import find_tool
from drsentry.core.errors import RunInProgress
from drsentry.core.events import ScheduledEvent
from drsentry.core.records import ReplicaDetail
from drsentry.jobs.backup.job import backup_target, run_scheduled_backup
from drsentry.jobs.runtime import build_runtime
from drsentry.local.sample import create_sample_database, drop_database, with_dbname

pytestmark = pytest.mark.integration


def _download(clients: Any, bucket: str, key: str) -> bytes:
    return clients.s3().get_object(Bucket=bucket, Key=key)["Body"].read()


def _open_uploads(clients: Any, bucket: str) -> list[Any]:
    return list(clients.s3().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _all_keys(clients: Any, bucket: str) -> list[str]:
    versions = clients.s3().list_object_versions(Bucket=bucket)
    return [v["Key"] for v in versions.get("Versions", [])] + [
        m["Key"] for m in versions.get("DeleteMarkers", [])
    ]


def test_stored_object_checksum_matches_record(source_db: str, make_config: Any, clients: Any) -> None:
    # Given a sample database and a provisioned stack
    config, _ = make_config(source_db)
    runtime = build_runtime(config)

    # When it is backed up
    record = backup_target(runtime, "app")

    # Then the stored object's SHA-256 and size equal the record's, in its tags and manifest too
    assert record.status == "completed", record.error
    body = _download(clients, record.bucket, record.key)
    assert hashlib.sha256(body).hexdigest() == record.sha256
    assert len(body) == record.size_bytes
    head = clients.s3().head_object(Bucket=record.bucket, Key=record.key)
    tags = clients.s3().get_object_tagging(Bucket=record.bucket, Key=record.key, VersionId=head["VersionId"])
    assert {tag["Key"]: tag["Value"] for tag in tags["TagSet"]} == {
        "sha256": record.sha256,
        "size-bytes": str(record.size_bytes),
    }
    assert head["Metadata"] == {"backup-id": record.backup_id, "target": "app", "compression": "zstd"}
    # and the object was written once: one version, whose parts S3 checked against their CRC32
    versions = clients.s3().list_object_versions(Bucket=record.bucket, Prefix=record.key)["Versions"]
    assert [version["VersionId"] for version in versions] == [head["VersionId"]]
    attributes = clients.s3().get_object_attributes(
        Bucket=record.bucket, Key=record.key, ObjectAttributes=["Checksum", "ObjectParts"]
    )
    assert attributes["Checksum"]["ChecksumCRC32"]
    assert head["ServerSideEncryption"] in {"AES256", "aws:kms"}
    manifest = json.loads(_download(clients, record.bucket, record.manifest_key))
    assert manifest["sha256"] == record.sha256
    assert manifest["tables"] == record.tables
    assert manifest["functions"] == [
        "book_appointment_with_lock(p_profile_id bigint, p_service_id bigint, "
        "p_starts_at timestamp with time zone)"
    ]
    assert {
        "table": "profiles",
        "enabled": True,
        "forced": False,
        "policies": ["profiles_same_organization"],
    } in manifest["rls"]
    # one version only: the metadata copy replaced the first upload
    assert _all_keys(clients, record.bucket).count(record.key) == 1


def test_key_layout_and_catalog_record(source_db: str, make_config: Any, clients: Any) -> None:
    config, _ = make_config(source_db)
    runtime = build_runtime(config)

    record = backup_target(runtime, "app")

    day = record.backup_id[:8]
    assert record.key == f"backups/app/{day[:4]}/{day[4:6]}/{day[6:8]}/{record.backup_id}.dump"
    assert record.manifest_key == record.key.removesuffix(".dump") + ".manifest.json"
    stored = runtime.catalog.get_backup(record.backup_id)
    assert stored == record
    assert stored.tier == "monthly"  # the first backup of the month
    assert stored.pg_server_version.startswith("18")
    assert stored.pg_dump_version.startswith("18")


def test_second_backup_of_the_day_is_hourly(source_db: str, make_config: Any) -> None:
    config, _ = make_config(source_db)
    runtime = build_runtime(config)

    first = backup_target(runtime, "app")
    second = backup_target(build_runtime(config), "app")

    assert first.tier == "monthly"
    assert second.tier == "hourly"
    assert [r.backup_id for r in runtime.catalog.list_backups("app")] == [second.backup_id, first.backup_id]


def test_restore_of_downloaded_object_reproduces_recorded_row_counts(
    source_db: str, make_config: Any, clients: Any, admin_dsn: str
) -> None:
    # Given a backup of a database that is written to while nothing else happens
    config, _ = make_config(source_db)
    record = backup_target(build_runtime(config), "app")
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute("delete from sessions")  # after the backup: must not show in the restore

    # When the object is downloaded, decompressed and restored into a fresh database
    dump = (
        zstandard.ZstdDecompressor().decompressobj().decompress(_download(clients, record.bucket, record.key))
    )
    target_db = "restored_" + record.backup_id[-8:]
    create_target = psycopg.connect(admin_dsn, autocommit=True)
    create_target.execute(f'create database "{target_db}"')
    create_target.close()
    try:
        pg_restore = find_tool("pg_restore")
        subprocess.run(
            [
                str(pg_restore.path),
                "--no-owner",
                "--exit-on-error",
                f"--dbname={with_dbname(admin_dsn, target_db)}",
            ],
            input=dump,
            check=True,
            capture_output=True,
        )
        # Then every table holds exactly the recorded number of rows
        with psycopg.connect(with_dbname(admin_dsn, target_db)) as conn:
            for table, expected in record.tables.items():
                count = conn.execute(f'select count(*) from "{table}"').fetchone()[0]
                assert count == expected, table
        assert record.tables["sessions"] == 1000
    finally:
        drop_database(admin_dsn, target_db)


@pytest.fixture(scope="module")
def large_db(pg_server: Any) -> Any:
    """A database whose dump takes long enough to be interrupted mid-stream."""
    admin = pg_server.dsn("postgres")
    dbname = "large_source"
    dsn = create_sample_database(admin, dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table blobs as select g as id, md5(random()::text) || md5(random()::text) as a,"
            " md5(random()::text) || md5(random()::text) as b from generate_series(1, 1500000) g"
        )
    yield dsn
    drop_database(admin, dbname)


def _pg_dump_processes() -> list[psutil.Process]:
    """This session's backup pg_dump: another pytest session on the machine has its own."""
    found = []
    for process in psutil.Process().children(recursive=True):
        try:
            name, cmdline = process.name(), process.cmdline()
        except psutil.NoSuchProcess:
            continue
        if name == "pg_dump" and any("--snapshot" in part for part in cmdline):
            found.append(process)
    return found


def _assert_no_trace(clients: Any, record: Any) -> None:
    assert record.status == "failed"
    assert _open_uploads(clients, record.bucket) == []
    assert record.key not in _all_keys(clients, record.bucket)
    assert record.manifest_key not in _all_keys(clients, record.bucket)


def _backup_in_thread(config: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        result["record"] = backup_target(build_runtime(config), "app")

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def _wait_for_upload(clients: Any, bucket: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _open_uploads(clients, bucket):
            return
        time.sleep(0.02)
    raise AssertionError("the multipart upload never started")


def test_killed_pg_dump_leaves_no_object_and_a_failed_record(
    large_db: str, make_config: Any, clients: Any
) -> None:
    # Given a backup whose upload is under way
    config, _ = make_config(large_db)
    thread, result = _backup_in_thread(config)
    _wait_for_upload(clients, config.storage.bucket)

    # When pg_dump is killed mid-stream
    for process in _pg_dump_processes():
        process.kill()
    thread.join(timeout=120)

    # Then nothing is left in the bucket, no upload is open, and the record says why
    record = result["record"]
    _assert_no_trace(clients, record)
    assert "pg_dump was killed by signal 9" in record.error
    stored = build_runtime(config).catalog.get_backup(record.backup_id)
    assert stored.status == "failed"


def test_facts_failing_while_pg_dump_streams_leave_no_object(
    source_db: str, make_config: Any, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a source whose facts query fails (here: refused) while pg_dump is streaming
    config, _ = make_config(source_db)

    def refused(conn: psycopg.Connection) -> None:
        conn.execute("select 1")  # on the snapshot's connection, in its own thread
        raise psycopg.errors.InsufficientPrivilege("permission denied for table secrets")

    monkeypatch.setattr(postgres_adapter, "read_facts", refused)

    # When the backup runs
    record = backup_target(build_runtime(config), "app")

    # Then the dump is not kept: no object, no open upload, and the record names the cause
    assert record.status == "failed"
    assert "permission denied for table secrets" in (record.error or "")
    _assert_no_trace(clients, record)


def test_terminated_server_connection_leaves_no_object(
    large_db: str, make_config: Any, clients: Any, admin_dsn: str
) -> None:
    config, _ = make_config(large_db)
    thread, result = _backup_in_thread(config)
    _wait_for_upload(clients, config.storage.bucket)

    # When the server terminates pg_dump's connection
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        terminated = conn.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity"
            " where application_name = 'drsentry-pg_dump' and datname = 'large_source'"
        ).fetchall()
    thread.join(timeout=120)

    assert terminated, "no pg_dump connection was found to terminate"
    record = result["record"]
    _assert_no_trace(clients, record)
    assert "pg_dump exited with code 1" in record.error


def test_unreachable_source_records_failure_without_password(
    make_config: Any, clients: Any, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a target whose server does not answer, with a password in its DSN
    password = "S3cret-not-for-logs"
    config, _ = make_config(f"postgresql://app:{password}@127.0.0.1:1/app")

    # When it is backed up
    with caplog.at_level(logging.DEBUG):
        record = backup_target(build_runtime(config), "app")

    # Then a failed record names the server, and the password appears nowhere
    assert record.status == "failed"
    assert "cannot connect to app@127.0.0.1:1/app" in record.error
    captured = capsys.readouterr()
    for text in (record.model_dump_json(), caplog.text, captured.out, captured.err):
        assert password not in text
    assert _open_uploads(clients, config.storage.bucket) == []


def test_password_never_logged_on_success(
    pg_server: Any,
    source_db: str,
    make_config: Any,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, _ = make_config(source_db)
    with caplog.at_level(logging.DEBUG):
        record = backup_target(build_runtime(config), "app")
    captured = capsys.readouterr()
    assert record.status == "completed"
    for text in (caplog.text, captured.out, captured.err, record.model_dump_json()):
        assert pg_server.password not in text


def test_dsn_secret_in_rds_shape_is_used(
    source_db: str, make_config: Any, clients: Any, pg_server: Any
) -> None:
    # Given the DSN only in a Secrets Manager secret shaped like RDS's
    from drsentry.local.provision import rds_secret
    from drsentry.local.sample import dbname_of

    secret_name = "drsentry/app-db-" + source_db[-6:]
    clients.secretsmanager.create_secret(
        Name=secret_name,
        SecretString=json.dumps(
            rds_secret(
                "127.0.0.1",
                pg_server.port,
                "postgres",
                pg_server.password,
                dbname_of(source_db),
                sslmode="disable",
            )
        ),
    )
    config, _ = make_config(source_db)
    target = config.targets[0].model_copy(update={"dsn": None, "dsn_secret": secret_name})
    config = config.model_copy(update={"targets": [target]})

    record = backup_target(build_runtime(config), "app")

    assert record.status == "completed", record.error
    assert record.tables["profiles"] == 2000


def test_missing_dsn_secret_is_a_failed_backup_naming_the_secret(source_db: str, make_config: Any) -> None:
    config, _ = make_config(source_db)
    target = config.targets[0].model_copy(update={"dsn": None, "dsn_secret": "drsentry/does-not-exist"})
    config = config.model_copy(update={"targets": [target]})

    record = backup_target(build_runtime(config), "app")

    assert record.status == "failed"
    assert "drsentry/does-not-exist" in record.error


def test_duplicate_scheduled_event_creates_one_backup(source_db: str, make_config: Any) -> None:
    # Given one scheduled event
    config, _ = make_config(source_db)
    event = ScheduledEvent.now("app")

    # When it is delivered twice
    first = run_scheduled_backup(build_runtime(config), event)
    second = run_scheduled_backup(build_runtime(config), event)

    # Then one backup exists and the retry returns the first run's result
    runtime = build_runtime(config)
    assert len(runtime.catalog.list_backups("app")) == 1
    assert second == first
    assert second.records[0].backup_id == first.records[0].backup_id


def test_different_events_make_different_backups(source_db: str, make_config: Any) -> None:
    config, _ = make_config(source_db)
    run_scheduled_backup(build_runtime(config), ScheduledEvent.now("app"))
    run_scheduled_backup(build_runtime(config), ScheduledEvent.now("app"))
    assert len(build_runtime(config).catalog.list_backups("app")) == 2


def test_concurrent_run_for_same_target_is_refused(source_db: str, make_config: Any) -> None:
    # Given a run that holds the target's lock
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    runtime.catalog.locks.acquire("app", "other-run", ttl_seconds=600)

    # When another run starts, it refuses and writes no record
    with pytest.raises(RunInProgress, match="another backup run of target 'app' is running"):
        backup_target(build_runtime(config), "app")
    assert runtime.catalog.list_backups("app") == []

    # And once the lock is released, backups run again
    runtime.catalog.locks.release("app", "other-run")
    assert backup_target(build_runtime(config), "app").status == "completed"


def test_expired_lock_of_a_crashed_run_does_not_block(source_db: str, make_config: Any) -> None:
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    runtime.catalog.locks.acquire("app", "crashed-run", ttl_seconds=-1)

    assert backup_target(build_runtime(config), "app").status == "completed"


def test_timeout_near_lambda_limit_aborts_cleanly(large_db: str, make_config: Any, clients: Any) -> None:
    # Given a run with less time left than the safety margin
    config, _ = make_config(large_db)
    runtime = build_runtime(config)
    runtime.remaining_seconds = lambda: 10.0

    record = backup_target(runtime, "app")

    assert "timed out" in record.error
    _assert_no_trace(clients, record)


def test_update_backup_sets_and_removes_fields(source_db: str, make_config: Any) -> None:
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")

    runtime.catalog.update_backup(
        "app", record.backup_id, {"replica": "ok", "replica_detail": {"etag": "e1"}}
    )
    updated = runtime.catalog.get_backup(record.backup_id)
    assert updated.replica == "ok"
    assert updated.replica_detail == ReplicaDetail(etag="e1")

    runtime.catalog.update_backup("app", record.backup_id, {"replica_detail": None})
    assert runtime.catalog.get_backup(record.backup_id).replica_detail is None


def test_update_of_unknown_backup_is_refused(source_db: str, make_config: Any) -> None:
    from drsentry.core.errors import BackupNotFound

    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    with pytest.raises(BackupNotFound, match="not found"):
        runtime.catalog.update_backup("app", "20261122T180000001Z-1a2b3c4d", {"replica": "ok"})
