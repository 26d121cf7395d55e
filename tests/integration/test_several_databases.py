"""A target of several databases (config `databases`), on a server of its own started by the
test: `databases: all` finds the databases the backup user may connect to (not the templates,
not one whose CONNECT is revoked), each gets its own dump and manifest under the one backup id,
verify restores and checks each one, and a restore brings back the one named by `--database`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from bucket_state import assert_withdrawn_then_purged
from conftest import KNOWN_SECRETS, embedded_server
from drsentry.adapters.table.keys import backup_sk, key, target_pk
from drsentry.core.records import BackupRecord, VerificationRecord
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.backup.unrecorded import find_unrecorded
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.jobs.verify.job import verify_backup
from drsentry.operator.cli.app import app

pytestmark = pytest.mark.integration

BACKUP_USER = "multidb_backup"
APP_ROWS = 120
ANALYTICS_ROWS = 45


@dataclass
class SeveralDatabasesServer:
    admin_dsn: str
    backup_dsn: str  # the backup user's DSN, on its `app` database

    def dsn(self, database: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=database)


def _fill(dsn: str, statements: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)  # fixed test DDL, no identifiers from input


@pytest.fixture(scope="module")
def several_databases() -> Iterator[SeveralDatabasesServer]:
    """app and analytics owned by the backup user; `locked` it may not CONNECT to; the
    `postgres` database closed to it too, so `all` means exactly app and analytics."""
    password = secrets.token_hex(12)
    KNOWN_SECRETS.add(password)
    with embedded_server("multidb") as server:
        admin_dsn = str(server.dsn("postgres"))
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("create role {} login password {}").format(
                    sql.Identifier(BACKUP_USER), sql.Literal(password)
                )
            )
            for name in ("app", "analytics"):
                conn.execute(
                    sql.SQL("create database {} owner {}").format(
                        sql.Identifier(name), sql.Identifier(BACKUP_USER)
                    )
                )
            conn.execute("create database locked")
            conn.execute("revoke connect on database locked from public")
            conn.execute("revoke connect on database postgres from public")
        user_dsn = make_conninfo(admin_dsn, user=BACKUP_USER, password=password)
        _fill(
            make_conninfo(user_dsn, dbname="app"),
            [
                "create table organizations (id int primary key, name text not null)",
                f"insert into organizations select i, 'org ' || i from generate_series(1, {APP_ROWS}) i",
            ],
        )
        _fill(
            make_conninfo(user_dsn, dbname="analytics"),
            [
                "create schema events",
                "create table events.page_views (id bigint primary key, path text)",
                "insert into events.page_views select i, '/p/' || i "
                f"from generate_series(1, {ANALYTICS_ROWS}) i",
            ],
        )
        yield SeveralDatabasesServer(admin_dsn, make_conninfo(user_dsn, dbname="app"))


def several_config(
    server: SeveralDatabasesServer, make_config: Any, admin_dsn: str, databases: Any
) -> tuple[Any, Path]:
    config, path = make_config(
        server.backup_dsn,
        databases=databases,
        verify={
            "scratch_dsn": admin_dsn,
            "critical_tables": ["organizations", "analytics.events.page_views"],
            "min_size": "1MB",
        },
    )
    return config, path


def backed_up(runtime: Runtime) -> BackupRecord:
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    return record


def check(record: VerificationRecord, name: str) -> Any:
    return next(c for c in record.checks if c.name == name)


def test_all_backs_up_every_database_the_user_may_connect_to_under_one_backup_id(
    several_databases: SeveralDatabasesServer, make_config: Any, admin_dsn: str
) -> None:
    # Given a target with `databases: all` on a server holding app, analytics, locked and templates
    config, _ = several_config(several_databases, make_config, admin_dsn, "all")
    runtime = build_runtime(config)

    # When it is backed up
    record = backed_up(runtime)

    # Then the record lists app and analytics (not locked, postgres or the templates), each with
    # its own dump under the backup's key prefix whose bytes match its SHA-256, and its row counts
    assert record.database_names == ["analytics", "app"]
    assert record.databases is not None
    by_name = {database.name: database for database in record.databases}
    assert by_name["app"].tables == {"organizations": APP_ROWS}
    assert by_name["analytics"].tables == {"events.page_views": ANALYTICS_ROWS}
    assert record.tables == {"app.organizations": APP_ROWS, "analytics.events.page_views": ANALYTICS_ROWS}
    assert record.size_bytes == sum(database.size_bytes for database in record.databases)
    prefix = record.manifest_key.removesuffix(".manifest.json")
    bucket = runtime.buckets.bucket(record.bucket)
    for stored in record.objects():
        assert stored.key.startswith(prefix)
        data = b"".join(bucket.iter_chunks(stored.key))
        assert len(data) == stored.size_bytes
        assert hashlib.sha256(data).hexdigest() == stored.sha256
    assert [stored.kind for stored in record.objects()] == ["dump", "dump", "globals"]
    # each database's manifest holds what its own snapshot held
    manifest = bucket.get_json(by_name["analytics"].manifest_key)
    assert manifest["tables"] == {"events.page_views": ANALYTICS_ROWS}
    assert manifest["sha256"] == by_name["analytics"].sha256
    # and the catalog holds the same record, databases and all
    assert runtime.catalog.get_backup(record.backup_id).databases == record.databases


def test_the_dumps_of_a_backup_of_several_databases_without_its_record_are_each_reported(
    several_databases: SeveralDatabasesServer, make_config: Any, admin_dsn: str
) -> None:
    # Given a backup of two databases whose record was never written (the run killed after upload)
    config, _ = several_config(several_databases, make_config, admin_dsn, ["app", "analytics"])
    runtime = build_runtime(config)
    record = backed_up(runtime)
    table = runtime.catalog.table
    table.client.delete_item(
        TableName=table.name, Key=key(target_pk(record.target), backup_sk(record.backup_id))
    )

    # When the stored dumps are compared with the catalog
    unrecorded = find_unrecorded(runtime, "app")

    # Then both databases' dumps are reported under the backup's id (none hidden in its folder)
    assert sorted((dump.backup_id, dump.key) for dump in unrecorded) == sorted(
        (record.backup_id, stored.key) for stored in record.objects() if stored.kind == "dump"
    )
    assert all(dump.manifest_key == record.manifest_key for dump in unrecorded)


def test_a_database_that_cannot_be_connected_to_fails_the_backup_naming_it_and_leaves_nothing(
    several_databases: SeveralDatabasesServer, make_config: Any, admin_dsn: str
) -> None:
    # Given a target listing app and `locked`, which the backup user may not connect to
    config, _ = several_config(several_databases, make_config, admin_dsn, ["app", "locked"])
    runtime = build_runtime(config)

    # When it is backed up
    record = backup_target(runtime, "app")

    # Then the backup failed naming the database, and no object is left (app's dump was withdrawn,
    # then purged by the archive run)
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith("database 'locked': ")
    assert "\n" not in record.error
    listed = list(runtime.buckets.bucket(record.bucket).iter_objects(config.storage.prefix))
    assert listed == []
    hidden, _ = assert_withdrawn_then_purged(runtime, "app", config.storage.prefix)
    assert [key.rsplit("/", 1)[-1] for key in hidden] == ["app.dump"]


def test_verify_checks_each_database_and_names_the_one_whose_object_is_corrupt(
    several_databases: SeveralDatabasesServer, make_config: Any, admin_dsn: str
) -> None:
    # Given a completed backup of app and analytics
    config, _ = several_config(several_databases, make_config, admin_dsn, ["app", "analytics"])
    runtime = build_runtime(config)
    record = backed_up(runtime)

    # When it is verified
    verified = verify_backup(runtime, "app", record)

    # Then both databases were restored and checked, each check named after its database,
    # the configured critical table of each found in its own database
    assert verified.status == "success", verified.error_details
    for database, table in (("app", "organizations"), ("analytics", "events.page_views")):
        assert check(verified, f"{database}: restore").status == "passed"
        assert check(verified, f"{database}: row counts").status == "passed"
        assert check(verified, f"{database}: roles and grants").status == "passed"
        assert check(verified, f"{database}: critical tables").detail == f"present: {table}"
    assert check(verified, "restore time").status == "passed"
    logged = [r for r in runtime.catalog.verifications.iter("app") if r.backup_id == record.backup_id]
    assert [r.id for r in logged] == [verified.id]  # one record for the backup

    # When one byte of analytics' dump is flipped and the backup is verified again
    assert record.databases is not None
    key = record.databases[1].key
    bucket = runtime.buckets.bucket(record.bucket)
    data = bytearray(b"".join(bucket.iter_chunks(key)))
    data[len(data) // 2] ^= 0xFF
    bucket.put_bytes(key, bytes(data), content_type="application/octet-stream", metadata={})
    corrupt = verify_backup(runtime, "app", record)

    # Then the verification fails on analytics' object checksum, and app still passes
    assert corrupt.status == "failure"
    assert check(corrupt, "analytics: object checksum").status == "failed"
    assert check(corrupt, "app: object checksum").status == "passed"
    assert corrupt.error_details is not None and "analytics: object checksum" in corrupt.error_details


def test_restore_of_a_backup_of_several_databases_needs_database_and_restores_that_one(
    several_databases: SeveralDatabasesServer, make_config: Any, admin_dsn: str, blank_pg_server: Any
) -> None:
    # Given a completed backup of app and analytics
    config, path = several_config(several_databases, make_config, admin_dsn, ["app", "analytics"])
    runtime = build_runtime(config)
    record = backed_up(runtime)
    runner = CliRunner()
    target_db = f"restored_{secrets.token_hex(4)}"
    to = str(blank_pg_server.dsn(target_db))
    base = ["restore", record.backup_id, "--to", to, "--yes", "--config", str(path)]

    # When it is restored without --database, and with an unknown one
    missing = runner.invoke(app, base)
    unknown = runner.invoke(app, [*base, "--database", "nope"])

    # Then both exit 2 with one line listing the backup's databases
    for result in (missing, unknown):
        assert result.exit_code == 2, result.output
        assert "app, analytics" in result.stderr
        assert "Traceback" not in result.output
    assert "pass --database NAME" in missing.stderr
    assert "no database 'nope'" in unknown.stderr

    # When analytics is restored into a brand-new server
    restored = runner.invoke(app, [*base, "--database", "analytics"])

    # Then its table and rows are there, and app's are not
    assert restored.exit_code == 0, restored.output
    with psycopg.connect(to) as conn:
        rows = conn.execute("select count(*) from events.page_views").fetchone()
        assert rows is not None and rows[0] == ANALYTICS_ROWS
        apps = conn.execute("select to_regclass('public.organizations')").fetchone()
        assert apps is not None and apps[0] is None


def test_a_single_database_target_keeps_its_record_shape(
    source_db: str, make_config: Any, admin_dsn: str
) -> None:
    # Given a target without `databases`
    config, path = make_config(source_db)
    runtime = build_runtime(config)

    # When it is backed up and listed as JSON
    record = backed_up(runtime)
    listed = CliRunner().invoke(app, ["backups", "list", "--config", str(path), "--json"])

    # Then the record has no `databases` field anywhere, its one dump is its key, and its
    # manifest sits beside the dump as before
    assert listed.exit_code == 0, listed.output
    (document,) = json.loads(listed.stdout)
    assert "databases" not in document
    assert "databases" not in runtime.buckets.bucket(record.bucket).get_json(record.manifest_key)
    assert document["key"] == record.key and record.key.endswith(f"/{record.backup_id}.dump")
    assert document["sha256"] == record.sha256 is not None
    assert [(o.key, o.sha256) for o in record.objects()][0] == (record.key, record.sha256)
