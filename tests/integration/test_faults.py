"""The fault matrix's remaining rows: SNS down, a full scratch disk, time running out
mid-stream, hostile identifiers in config, secrets of the wrong shape."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from fault_proxy import FaultProxy, Rule
from psycopg import sql

from drsentry.adapters.secrets import dsn_from_secret
from drsentry.core.errors import CredentialsError
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import build_runtime
from drsentry.jobs.verify.job import verify_target
from drsentry.local.sample import with_dbname

pytestmark = pytest.mark.integration


def _sns_publish(request: Any) -> bool:
    return request.method == "POST" and b"Action=Publish" in request.body


@pytest.fixture
def proxy(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(aws_endpoint) as fault_proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
        yield fault_proxy


def test_sns_down_still_records_the_backup(source_db: str, make_config: Any, proxy: FaultProxy) -> None:
    # Given SNS failing every publish
    config, _ = make_config(source_db)
    rule = proxy.add(Rule(_sns_publish, "status", status=500))

    # When a backup runs
    record = backup_target(build_runtime(config), "app")

    # Then the publish was tried (and retried), and the backup is recorded all the same
    assert rule.applied >= 1
    assert record.status == "completed"
    assert build_runtime(config).catalog.get_backup(record.backup_id).status == "completed"


def test_time_running_out_mid_stream_aborts_cleanly(source_db: str, make_config: Any, clients: Any) -> None:
    # Given a database big enough to stream for a while, and a Lambda whose time runs out
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create table payload as select g, md5(random()::text) || md5(random()::text) as a"
            " from generate_series(1, 300000) g"
        )
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    budget = iter([600.0] * 4 + [10.0] * 10_000)  # plenty at first, then below the margin
    runtime.remaining_seconds = lambda: next(budget)

    record = backup_target(runtime, "app")

    # Then the run stops itself: `failed` with "timed out", no upload left open, no object
    assert record.status == "failed"
    assert "timed out" in record.error
    s3 = clients.s3()
    assert s3.list_multipart_uploads(Bucket=config.storage.bucket).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=config.storage.bucket).get("KeyCount", 0) == 0


@pytest.fixture
def full_scratch(admin_dsn: str, pg_server: Any) -> Iterator[str]:
    """A scratch login whose temporary-file space is exhausted: the sorts behind index
    builds fail the way they fail on a full disk."""
    role = "scratch_disk_full"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop role if exists {}").format(sql.Identifier(role)))
        conn.execute(
            sql.SQL("create role {} login createdb password {}").format(
                sql.Identifier(role), sql.Literal(pg_server.password)
            )
        )
        conn.execute(sql.SQL("alter role {} set temp_file_limit = 0").format(sql.Identifier(role)))
        conn.execute(sql.SQL("alter role {} set maintenance_work_mem = '1MB'").format(sql.Identifier(role)))
        # Verify keeps the backup's owners (here the source's admin user): the scratch user must be
        # able to act as them, as an RDS master user can for the roles it created.
        owner = psycopg.conninfo.conninfo_to_dict(admin_dsn)["user"]
        conn.execute(sql.SQL("grant {} to {}").format(sql.Identifier(str(owner)), sql.Identifier(role)))
    yield with_dbname(admin_dsn.replace("postgres:", f"{role}:", 1), "postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        for (datname,) in conn.execute(
            "select datname from pg_database d join pg_roles r on r.oid = d.datdba where r.rolname = %s",
            (role,),
        ).fetchall():
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(datname)))
        conn.execute(sql.SQL("drop role {}").format(sql.Identifier(role)))


def test_scratch_disk_full_is_a_failure_with_the_reason(
    source_db: str, make_config: Any, full_scratch: str, admin_dsn: str
) -> None:
    # Given a backup with an index whose build needs temporary files
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create table payload as select g, md5(random()::text) || md5(random()::text) as a"
            " from generate_series(1, 200000) g"
        )
        conn.execute("create index payload_a on payload (a)")
    config, _ = make_config(source_db)
    backup_target(build_runtime(config), "app")

    # When it is verified on a scratch server that cannot write temporary files
    verify = config.targets[0].verify.model_copy(update={"scratch_dsn": full_scratch})
    target = config.targets[0].model_copy(update={"verify": verify})
    config = config.model_copy(update={"targets": [target]})
    (record,) = verify_target(build_runtime(config), "app")

    # Then the verification fails at the restore and says why; no scratch database is left
    assert record.status == "failure"
    restore = next(check for check in record.checks if check.name == "restore")
    assert restore.status == "failed"
    assert "temp_file_limit" in restore.detail
    with psycopg.connect(admin_dsn) as conn:
        left = conn.execute(
            "select count(*) from pg_database where datname like 'drsentry_verify_%'"
        ).fetchone()
    assert left == (0,)


def test_hostile_identifiers_in_config_are_only_ever_identifiers(source_db: str, make_config: Any) -> None:
    # Given a table and a function whose names hold quotes, semicolons and spaces, with RLS
    hostile_table = 'audit"; drop table profiles; --'
    hostile_function = "notify; drop table appointments; --"
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(sql.SQL("create table {} (id int primary key)").format(sql.Identifier(hostile_table)))
        conn.execute(
            sql.SQL("insert into {} select generate_series(1, 7)").format(sql.Identifier(hostile_table))
        )
        conn.execute(
            sql.SQL("alter table {} enable row level security").format(sql.Identifier(hostile_table))
        )
        conn.execute(
            sql.SQL("create policy everyone on {} using (true)").format(sql.Identifier(hostile_table))
        )
        conn.execute(
            sql.SQL("create function {}() returns int language sql as 'select 1'").format(
                sql.Identifier(hostile_function)
            )
        )
    config, _ = make_config(source_db)
    verify = config.targets[0].verify.model_copy(
        update={
            "critical_tables": ["organizations", hostile_table],
            "functions": [hostile_function],
            "rls_tables": ["profiles", hostile_table],
        }
    )
    config = config.model_copy(update={"targets": [config.targets[0].model_copy(update={"verify": verify})]})

    # When it is backed up (rows counted per table through the names) and verified
    record = backup_target(build_runtime(config), "app")
    (verification,) = verify_target(build_runtime(config), "app")

    # Then the names were used as names: counted, restored, found, and nothing was executed
    assert record.tables[hostile_table] == 7
    assert verification.status == "success", [c for c in verification.checks if c.status != "passed"]
    with psycopg.connect(source_db) as conn:
        tables = {
            row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'public'")
        }
    assert {"profiles", "appointments", hostile_table} <= tables


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ({"host": "db", "username": "app"}, "lacks field(s): password"),
        ({"port": 5432}, "lacks field(s): host, username, password"),
    ],
)
def test_dsn_secret_lacking_fields_is_named(secret: dict[str, Any], problem: str) -> None:
    with pytest.raises(CredentialsError, match=re.escape(f"secret 'drsentry/app-db' {problem}")):
        dsn_from_secret(secret, "drsentry/app-db")


def test_dsn_secret_that_is_not_json_is_a_failed_backup(
    source_db: str, make_config: Any, clients: Any
) -> None:
    name = "drsentry/not-json-" + source_db[-6:]
    clients.secretsmanager.create_secret(Name=name, SecretString="postgres://not-json")
    config, _ = make_config(source_db)
    target = config.targets[0].model_copy(update={"dsn": None, "dsn_secret": name})
    config = config.model_copy(update={"targets": [target]})

    record = backup_target(build_runtime(config), "app")

    assert record.status == "failed"
    assert record.error == f"secret {name!r} is not a JSON object"
    assert json.loads(record.model_dump_json())["error"] == record.error


def test_backup_blocked_by_a_table_lock_is_stopped_before_the_deadline(
    source_db: str, make_config: Any, clients: Any
) -> None:
    from drsentry.core.deadlines import monotonic_deadline
    from drsentry.jobs.backup.dump import TIMEOUT_MARGIN_SECONDS

    # Given a migration holding an exclusive lock on a table, and a Lambda with little time
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    runtime.remaining_seconds = monotonic_deadline(TIMEOUT_MARGIN_SECONDS + 3)
    with psycopg.connect(source_db) as migration:
        migration.execute("lock table appointments in access exclusive mode")

        # When the backup runs into the lock
        record = backup_target(runtime, "app")

    # Then the watchdog stops it in time, it is recorded, and nothing is left behind
    assert record.status == "failed"
    assert record.error.startswith("timed out")
    s3 = clients.s3()
    assert s3.list_multipart_uploads(Bucket=config.storage.bucket).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=config.storage.bucket).get("KeyCount", 0) == 0
    # and the lock is free for the next run
    runtime.catalog.locks.acquire("app", "next-run", ttl_seconds=60)
