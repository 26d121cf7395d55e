"""Verify against a real PostgreSQL and moto's server over HTTP.

Every test ends by checking the side effect an operator cares about most after a failed
verification: no `drsentry_verify_%` database is left on the scratch server.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import psutil
import psycopg
import pytest
from locked_objects import destroy_every_version
from typer.testing import CliRunner

from drsentry.adapters.buckets import ObjectStore
from drsentry.adapters.pgtools import find_tool
from drsentry.adapters.restore_stream import RestoreTimedOut, stream_restore
from drsentry.core.deadlines import monotonic_deadline
from drsentry.core.records import BackupRecord, VerificationRecord
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.jobs.verify.job import verify_backup, verify_target
from drsentry.jobs.verify.rules import TIMEOUT_MARGIN_SECONDS, scratch_database_name
from drsentry.local.embedded_pg import free_port
from drsentry.operator.cli.app import app

pytestmark = pytest.mark.integration

EVERY_CHECK = [
    "object checksum",
    "archive readable",
    "restore",
    "connectivity",
    "critical tables",
    "row counts",
    "row count drift",
    "functions",
    "row-level security",
    "database size",
    "schema fingerprint",
    "roles and grants",
    "restore time",
]


def verify_section(admin_dsn: str, **changes: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "scratch_dsn": admin_dsn,
        "critical_tables": ["organizations", "profiles", "appointments"],
        "functions": ["book_appointment_with_lock"],
        "rls_tables": ["profiles"],
        "min_size": "1MB",
    }
    section.update(changes)
    return {"verify": section}


def scratch_databases(admin_dsn: str) -> list[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            r"select datname from pg_database where datname like 'drsentry\_verify\_%'"
        ).fetchall()
    return [str(row[0]) for row in rows]


def run_sql(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(statement.encode())


def check(record: VerificationRecord, name: str) -> Any:
    return next(c for c in record.checks if c.name == name)


@pytest.fixture
def runtime(source_db: str, make_config: Any) -> Runtime:
    config, _ = make_config(source_db)
    return build_runtime(config)


@pytest.fixture
def backup(runtime: Runtime) -> BackupRecord:
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    return record


@pytest.fixture(autouse=True)
def no_scratch_database_left(admin_dsn: str) -> Iterator[None]:
    yield
    assert scratch_databases(admin_dsn) == []


def subscribe_queue(runtime: Runtime) -> str:
    sqs = runtime.clients.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"verify-{runtime.run_id[:8]}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic_arn = runtime.config.notifications.sns_topic_arn
    assert topic_arn is not None
    runtime.clients.sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    return str(queue_url)


def received_notices(runtime: Runtime, queue_url: str) -> list[dict[str, Any]]:
    sqs = runtime.clients.client("sqs")
    messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    )
    return [json.loads(json.loads(message["Body"])["Message"]) for message in messages]


# the happy path ------------------------------------------------------------------------------


def test_clean_backup_verifies_success_with_every_check_listed(
    runtime: Runtime, backup: BackupRecord
) -> None:
    # Given a completed backup and a queue on the alert topic
    queue_url = subscribe_queue(runtime)

    # When the target is verified
    records = verify_target(runtime, "app")

    # Then the newest backup verified `success`, every check passed (drift has no baseline yet)
    assert len(records) == 1
    record = records[0]
    assert record.status == "success", record.error_details
    assert record.backup_id == backup.backup_id
    assert [c.name for c in record.checks] == EVERY_CHECK
    assert {c.name for c in record.checks if c.status != "passed"} == {"row count drift"}
    assert record.checks_passed == 12 and record.checks_failed == 0
    assert record.restore_seconds is not None and 0 < record.restore_seconds < 60
    assert record.error_details is None
    assert backup.sha256 and backup.sha256 in check(record, "object checksum").detail
    # ... the record is in the log, with the contract's fields and a 90-day TTL
    assert runtime.catalog.verifications.latest("app") == record
    item = runtime.clients.dynamodb.get_item(
        TableName=runtime.config.catalog.table,
        Key={"pk": {"S": "target#app"}, "sk": {"S": f"verify#{record.verified_at}#{record.id}"}},
    )["Item"]
    assert int(item["expires_at"]["N"]) - time.time() == pytest.approx(90 * 86400, abs=120)
    # ... and one notice reached the topic, with the RPO/RTO details
    [notice] = received_notices(runtime, queue_url)
    assert notice["source"] == "verify" and notice["status"] == "success" and notice["severity"] == "info"
    assert notice["details"]["backup_id"] == backup.backup_id
    assert set(notice["details"]) >= {"backup_age_hours", "rpo_hours", "restore_seconds", "rto_seconds"}


def test_leftover_scratch_database_of_a_crashed_run_is_dropped(
    runtime: Runtime, backup: BackupRecord, admin_dsn: str
) -> None:
    # Given a scratch database a crashed run left behind
    run_sql(admin_dsn, "create database drsentry_verify_20200101t000000000z_deadbeef")

    # When a backup is verified
    record = verify_backup(runtime, "app", backup)

    # Then the verification succeeded and the leftover is gone (checked by the autouse fixture)
    assert record.status == "success", record.error_details


def test_scratch_database_in_use_by_another_run_is_left_alone(
    runtime: Runtime, backup: BackupRecord, admin_dsn: str
) -> None:
    # Given a scratch database that a concurrent run is connected to
    other = "drsentry_verify_20200101t000000000z_cafebabe"
    run_sql(admin_dsn, f"create database {other}")
    try:
        with psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn, dbname=other)):
            # When a backup is verified meanwhile
            record = verify_backup(runtime, "app", backup)

            # Then that database survived the leftover cleanup
            assert record.status == "success", record.error_details
            assert scratch_databases(admin_dsn) == [other]
    finally:
        run_sql(admin_dsn, f"drop database if exists {other} with (force)")


# a damaged object ---------------------------------------------------------------------------


def test_one_flipped_byte_fails_the_checksum(runtime: Runtime, backup: BackupRecord) -> None:
    # Given the stored object with one byte flipped (the catalog still holds the original SHA-256)
    s3 = runtime.clients.s3()
    body = bytearray(s3.get_object(Bucket=backup.bucket, Key=backup.key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    s3.put_object(Bucket=backup.bucket, Key=backup.key, Body=bytes(body))

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then the verification failed, and the checksum check says why
    assert record.status == "failure"
    checksum = check(record, "object checksum")
    assert checksum.status == "failed"
    assert "does not match the catalog's" in checksum.detail and backup.sha256 in checksum.detail
    assert record.error_details and "object checksum" in record.error_details


def test_truncated_object_fails_checksum_and_archive(runtime: Runtime, backup: BackupRecord) -> None:
    # Given the stored object cut to 60 %
    s3 = runtime.clients.s3()
    body = s3.get_object(Bucket=backup.bucket, Key=backup.key)["Body"].read()
    s3.put_object(Bucket=backup.bucket, Key=backup.key, Body=body[: len(body) * 6 // 10])

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then: failure, with the size mismatch, the unreadable archive and no completed restore
    assert record.status == "failure"
    assert check(record, "object checksum").status == "failed"
    assert f"catalog says {backup.size_bytes:,}" in check(record, "object checksum").detail
    assert check(record, "archive readable").status == "failed"
    assert "truncated" in check(record, "archive readable").detail
    assert check(record, "restore").status == "failed"
    assert check(record, "connectivity").status == "skipped"


def test_missing_object_fails_and_says_so(runtime: Runtime, backup: BackupRecord) -> None:
    # (the backup is under Object Lock: only someone who may bypass governance can delete it)
    destroy_every_version(runtime.store.s3, backup.bucket, backup.key)

    record = verify_backup(runtime, "app", backup)

    assert record.status == "failure"
    assert check(record, "object checksum").status == "failed"
    assert "backup object unreadable" in check(record, "object checksum").detail
    assert all(c.status == "skipped" for c in record.checks[1:])


# what the backup holds ----------------------------------------------------------------------


def test_backup_without_a_critical_table_fails_naming_it(runtime: Runtime, source_db: str) -> None:
    # Given a backup taken after a critical table was dropped
    run_sql(source_db, "drop table appointments")
    backup = backup_target(runtime, "app")

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then: failure naming the table, although the restore itself was fine
    assert record.status == "failure"
    assert check(record, "restore").status == "passed"
    tables = check(record, "critical tables")
    assert tables.status == "failed" and tables.detail == "missing: appointments"
    assert check(record, "row counts").status == "passed"


def test_rls_disabled_on_an_rls_table_fails(runtime: Runtime, source_db: str) -> None:
    run_sql(source_db, "alter table profiles disable row level security")
    backup = backup_target(runtime, "app")

    record = verify_backup(runtime, "app", backup)

    assert record.status == "failure"
    rls = check(record, "row-level security")
    assert rls.status == "failed" and rls.detail == "profiles: row-level security is disabled"


def test_false_warning_assertion_gives_warning_and_says_which_and_why(
    source_db: str, make_config: Any, admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given warning assertions that are false, broken, try to write, or smuggle a second statement,
    # and a critical one (with a LIKE pattern) that holds
    assertions = [
        {"name": "never", "sql": "select false", "severity": "warning"},
        {"name": "broken", "sql": "select count(*) > 0 from no_such_table", "severity": "warning"},
        {
            "name": "writes",
            "sql": "with gone as (delete from sessions returning 1) select count(*) = 0 from gone",
            "severity": "warning",
        },
        {"name": "escape", "sql": "commit; select true", "severity": "warning"},
        {"name": "slow", "sql": "select pg_sleep(5) is not null", "severity": "warning"},
        {
            "name": "emails",
            "sql": "select bool_and(email like '%@example.org') from profiles",
            "severity": "critical",
        },
    ]
    config, _ = make_config(source_db, **verify_section(admin_dsn, assertions=assertions))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")
    monkeypatch.setattr("drsentry.jobs.verify.checks.ASSERTION_TIMEOUT_SECONDS", 1.0)

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then: warning; each assertion says which and why
    assert record.status == "warning", record.error_details
    assert check(record, "assertion: never").detail == "returned false"
    assert 'relation "no_such_table" does not exist' in check(record, "assertion: broken").detail
    assert "read-only transaction" in check(record, "assertion: writes").detail
    assert "multiple commands" in check(record, "assertion: escape").detail
    assert check(record, "assertion: slow").detail == "timed out after 1s (statement_timeout)"
    assert check(record, "assertion: emails").status == "passed"
    assert record.checks_failed == 5
    assert check(record, "restore time").status == "passed"
    assert [c.name for c in record.checks if c.severity == "critical" and c.status == "failed"] == []


def test_row_drift_over_tolerance_gives_warning(runtime: Runtime, source_db: str) -> None:
    # Given a verified backup, then a third of the appointments deleted and a second backup
    first = backup_target(runtime, "app")
    assert verify_backup(runtime, "app", first).status == "success"
    run_sql(source_db, "delete from appointments where id % 3 = 0")
    second = backup_target(runtime, "app")

    # When the second backup is verified
    record = verify_backup(runtime, "app", second)

    # Then: warning, the drift check names the table and the previous backup
    assert record.status == "warning", record.error_details
    drift = check(record, "row count drift")
    assert drift.status == "failed"
    assert "appointments: 6,000 -> 4,000 rows (-33.3%)" in drift.detail
    assert first.backup_id in drift.detail
    assert check(record, "row counts").status == "passed"


# the scratch server --------------------------------------------------------------------------


def test_unreachable_scratch_server_gives_a_failure_record(
    source_db: str, make_config: Any, admin_dsn: str
) -> None:
    # Given a scratch DSN pointing at a port nobody listens on
    closed = f"postgresql://postgres:pw-n0body@127.0.0.1:{free_port()}/postgres"
    config, _ = make_config(source_db, **verify_section(closed))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")

    # When it is verified
    [record] = verify_target(runtime, "app")

    # Then a failure record says so, is in the log, and holds no password
    assert record.status == "failure"
    assert record.backup_id == backup.backup_id
    assert record.error_details and "scratch server unreachable" in record.error_details
    assert "pw-n0body" not in record.model_dump_json()
    assert runtime.catalog.verifications.latest("app") == record


def test_malformed_scratch_dsn_fails_the_restore_without_echoing_it(source_db: str, make_config: Any) -> None:
    # Given a scratch DSN that is not a connection string, with a password in it
    config, _ = make_config(source_db, **verify_section("host=db password=pw-m4lformed port"))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then the restore check fails naming the scratch DSN, the rest are skipped, nothing leaks
    assert record.status == "failure"
    restore = check(record, "restore")
    assert restore.status == "failed"
    assert restore.detail == (
        "cannot read the database credentials: "
        "the scratch DSN is not a valid PostgreSQL connection string (not shown)"
    )
    assert check(record, "object checksum").status == "skipped"
    assert "pw-m4lformed" not in record.model_dump_json()
    assert runtime.catalog.verifications.latest("app") == record


def test_session_lost_during_an_assertion_stops_the_run(
    source_db: str, make_config: Any, admin_dsn: str
) -> None:
    # Given an assertion that kills its own session on the restored database
    assertions = [
        {"name": "suicide", "sql": "select pg_terminate_backend(pg_backend_pid())", "severity": "warning"}
    ]
    config, _ = make_config(source_db, **verify_section(admin_dsn, assertions=assertions))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then the run stopped there: a failure naming the assertion, later checks skipped, the
    # database checks before it passed, and (autouse fixture) the scratch database is dropped
    assert record.status == "failure"
    lost = check(record, "assertion: suicide")
    assert lost.status == "failed" and lost.detail.startswith("lost the restored database: ")
    assert check(record, "restore time").status == "skipped"
    assert check(record, "restore time").detail == f"not run: {lost.detail}"
    assert check(record, "schema fingerprint").status == "passed"


def test_scratch_dsn_that_is_the_source_is_refused(source_db: str, make_config: Any) -> None:
    # Given a scratch DSN that names the source database itself
    config, _ = make_config(source_db, **verify_section(source_db))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then it is refused, and the source is untouched
    assert record.status == "failure"
    assert check(record, "restore").status == "failed"
    assert "refused" in check(record, "restore").detail
    with psycopg.connect(source_db) as conn:
        row = conn.execute("select count(*) from appointments").fetchone()
    assert row == (6000,)


# time limits ---------------------------------------------------------------------------------


class SlowStore(ObjectStore):
    """Object storage that delivers 16 KiB every 0.2 s: a restore that outlives its deadline."""

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = 16 * 1024) -> Iterator[bytes]:
        for chunk in super().iter_chunks(bucket, key, chunk_size=16 * 1024):
            time.sleep(0.2)
            yield chunk


def test_timeout_during_restore_records_failure_and_drops_scratch(
    runtime: Runtime, backup: BackupRecord
) -> None:
    # Given a run with 1.5 s left (after the margin) and a slow download
    runtime.store = SlowStore(runtime.store.s3)
    runtime.remaining_seconds = monotonic_deadline(TIMEOUT_MARGIN_SECONDS + 1.5)
    started = time.monotonic()

    # When the backup is verified
    record = verify_backup(runtime, "app", backup)

    # Then it stopped in time, failed as "timed out", and (autouse fixture) left no scratch database
    assert time.monotonic() - started < 10
    assert record.status == "failure"
    assert check(record, "restore").status == "failed"
    assert "timed out" in check(record, "restore").detail


def test_stream_restore_kills_pg_restore_at_the_deadline(
    runtime: Runtime, backup: BackupRecord, admin_dsn: str
) -> None:
    # Given a slow download into a fresh database and a deadline 1 s away
    name = scratch_database_name(backup.backup_id)
    run_sql(admin_dsn, f"create database {name}")
    target_dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    pg_restore = find_tool("pg_restore")
    try:
        # When the deadline passes mid-stream
        with pytest.raises(RestoreTimedOut, match="timed out"):
            stream_restore(
                SlowStore(runtime.store.s3),
                backup.bucket,
                backup.key,
                target_dsn,
                pg_restore,
                remaining_seconds=monotonic_deadline(1.0),
            )
        # Then no pg_restore child is left running
        children = [p for p in psutil.Process().children(recursive=True) if "pg_restore" in p.name()]
        assert children == []
    finally:
        run_sql(admin_dsn, f"drop database if exists {name} with (force)")


def test_password_reaches_pg_restore_only_through_the_environment(
    runtime: Runtime, backup: BackupRecord, admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    commands: list[list[str]] = []
    original = subprocess.Popen

    def spy(command: list[str], *args: Any, **kwargs: Any) -> Any:
        commands.append(list(command))
        return original(command, *args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    record = verify_backup(runtime, "app", backup)

    password = psycopg.conninfo.conninfo_to_dict(admin_dsn)["password"]
    restore_commands = [c for c in commands if c[0].endswith("pg_restore") and "--version" not in c]
    assert record.status == "success" and restore_commands
    assert all(str(password) not in " ".join(c) for c in restore_commands)


# the CLI -------------------------------------------------------------------------------------


def test_cli_run_verify_then_list_newest_first(
    source_db: str, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backup, and EMF metrics kept off stdout as the CLI does for a terminal
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    config, path = make_config(source_db)
    backup_target(build_runtime(config), "app")
    runner = CliRunner()

    # When it is verified twice through the CLI
    first = runner.invoke(app, ["run", "verify", "--config", str(path), "--json"])
    second = runner.invoke(app, ["run", "verify", "--config", str(path), "--target", "app"])
    listed = runner.invoke(app, ["verifications", "list", "--config", str(path), "--days", "1", "--json"])

    # Then both exit 0, and the log lists the two records, newest first
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    assert "row count drift" in second.stdout
    assert listed.exit_code == 0, listed.output
    ran = json.loads(first.stdout)["verifications"]
    records = json.loads(listed.stdout)
    assert len(records) == 2
    assert records[1]["id"] == ran[0]["id"]
    assert [r["id"] for r in records] == sorted((r["id"] for r in records), reverse=True)
    assert set(records[0]) == set(VerificationRecord.model_fields)
    assert records[0]["status"] == "success"


def test_cli_run_verify_exits_1_on_failure(
    source_db: str, make_config: Any, admin_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    config, path = make_config(source_db, **verify_section(source_db))
    backup_target(build_runtime(config), "app")

    result = CliRunner().invoke(app, ["run", "verify", "--config", str(path)])

    assert result.exit_code == 1
    assert "refused" in result.stdout


def test_cli_run_verify_without_backup_exits_1(
    source_db: str, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    _, path = make_config(source_db)

    result = CliRunner().invoke(app, ["run", "verify", "--config", str(path)])

    assert result.exit_code == 1
    assert "no completed backup" in result.stderr


def test_history_is_limited_to_the_days_asked(runtime: Runtime, backup: BackupRecord) -> None:
    log = runtime.catalog.verifications
    old = VerificationRecord(
        target="app", backup_id=backup.backup_id, verified_at="2020-01-01T00:00:00Z", status="success"
    )
    log.put(old)
    recent = verify_backup(runtime, "app", backup)

    assert [r.id for r in log.history("app", 7)] == [recent.id]
    assert [r.id for r in log.history("app", 365 * 20)] == [recent.id, old.id]
    assert log.latest("app") == recent
