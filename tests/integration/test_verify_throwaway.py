"""Verify with no scratch server configured: a blank throwaway PostgreSQL server per run.

Every test runs with its own scratch directory (TMPDIR) and ends by checking what an operator
would look for after any verification, good or bad: no server process left, no directory left
in the scratch directory, and no scratch database on the standing server either.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from locked_objects import destroy_every_version
from roles_database import RolesDatabase

from drsentry.adapters.buckets import ObjectStore
from drsentry.core.deadlines import monotonic_deadline
from drsentry.core.records import BackupRecord, VerificationRecord
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.jobs.verify.job import verify_backup, verify_target
from drsentry.jobs.verify.rules import TIMEOUT_MARGIN_SECONDS

pytestmark = pytest.mark.integration

SAMPLE_CHECKS = {
    "critical_tables": ["organizations", "profiles", "appointments"],
    "functions": ["book_appointment_with_lock"],
    "rls_tables": ["profiles"],
    "min_size": "1MB",
}


def check(record: VerificationRecord, name: str) -> Any:
    return next(c for c in record.checks if c.name == name)


def servers_under(directory: Path) -> list[psutil.Process]:
    """PostgreSQL processes whose command line names `directory` (the postmaster's -D)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(directory) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


@pytest.fixture
def scratch_root(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's TMPDIR, reachable by the unprivileged user the server runs as under root;
    afterwards nothing of a throwaway server may remain in it, or running."""
    root = Path(tempfile.mkdtemp(prefix="drsentry-test-scratch-"))
    root.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    try:
        yield root
        assert servers_under(root) == []
        assert sorted(path.name for path in root.iterdir()) == []
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


@pytest.fixture
def runtime(source_db: str, make_config: Any, scratch_root: Path) -> Runtime:
    config, _ = make_config(source_db, verify=dict(SAMPLE_CHECKS))
    assert config.targets[0].verify.standing_scratch is False
    return build_runtime(config)


@pytest.fixture
def backup(runtime: Runtime) -> BackupRecord:
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    return record


@pytest.fixture(autouse=True)
def nothing_on_the_standing_server(admin_dsn: str) -> Iterator[None]:
    yield
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(r"select datname from pg_database where datname like 'drsentry\_verify\_%'")
        assert rows.fetchall() == []


def test_sample_database_verifies_on_a_throwaway_server_that_is_gone_afterwards(
    runtime: Runtime, backup: BackupRecord, scratch_root: Path
) -> None:
    # Given a backup of the sample database and no scratch server in the configuration
    # When the target is verified
    (record,) = verify_target(runtime, "app")

    # Then it succeeded on a throwaway server, and the record says which server and how it was tuned
    assert record.status == "success", record.error_details
    assert check(record, "restore").status == "passed"
    assert record.server is not None and record.server.kind == "throwaway"
    assert backup.pg_server_version and record.server.version
    assert record.server.version.split(".")[0] == backup.pg_server_version.split(".")[0]
    assert record.server.start_seconds is not None and 0 < record.server.start_seconds < 60
    assert record.server.settings["fsync"] == "off"
    assert record.server.settings["wal_level"] == "minimal"
    assert record.server.settings["autovacuum"] == "off"
    assert record.server.settings["maintenance_work_mem"].endswith("MB")
    # ... the time split: the restore alone (RTO), and the checks after it
    assert record.restore_seconds is not None and record.restore_seconds > 0
    assert record.checks_seconds is not None and record.checks_seconds > 0
    # ... as stored in the verification log
    assert runtime.catalog.verifications.latest("app") == record
    # (the scratch_root fixture: no process and no directory left)


def test_corrupt_object_fails_and_leaves_nothing(
    runtime: Runtime, backup: BackupRecord, scratch_root: Path
) -> None:
    # Given the stored object with one byte flipped in its second half
    s3 = runtime.clients.s3()
    body = bytearray(s3.get_object(Bucket=backup.bucket, Key=backup.key)["Body"].read())
    body[len(body) * 3 // 4] ^= 0x01
    s3.put_object(Bucket=backup.bucket, Key=backup.key, Body=bytes(body))

    # When it is verified
    record = verify_backup(runtime, "app", backup)

    # Then the verification failed (checksum and restore), and the server is gone (fixture)
    assert record.status == "failure"
    assert check(record, "object checksum").status == "failed"
    assert check(record, "restore").status == "failed"
    assert record.server is not None and record.server.kind == "throwaway"


class SlowStore(ObjectStore):
    """Object storage that delivers 4 KiB every 0.3 s: the sample backup (about 230 KB) takes
    over 15 s, a restore that outlives its deadline however fast the server is."""

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = 4 * 1024) -> Iterator[bytes]:
        for chunk in super().iter_chunks(bucket, key, chunk_size=4 * 1024):
            time.sleep(0.3)
            yield chunk


def test_timeout_during_the_restore_fails_and_leaves_nothing(
    runtime: Runtime, backup: BackupRecord, scratch_root: Path
) -> None:
    # Given a slow download and a run with 8 s left after the margin (the server's start, a few
    # seconds on a loaded machine, comes out of the same budget)
    runtime.store = SlowStore(runtime.store.s3)
    runtime.remaining_seconds = monotonic_deadline(TIMEOUT_MARGIN_SECONDS + 8)
    started = time.monotonic()

    # When the backup is verified
    record = verify_backup(runtime, "app", backup)

    # Then it stopped in time as "timed out", and the server and its directory are gone (fixture)
    assert time.monotonic() - started < 20
    assert record.status == "failure"
    assert "timed out" in check(record, "restore").detail, check(record, "restore").detail


def test_a_backup_of_a_newer_major_is_refused_with_the_ways_out(
    runtime: Runtime, backup: BackupRecord, scratch_root: Path
) -> None:
    # Given a backup record of a PostgreSQL major newer than the server binaries here
    newer = backup.model_copy(update={"pg_server_version": "99.1"})

    # When it is verified
    record = verify_backup(runtime, "app", newer)

    # Then it fails at the restore in one line naming both versions and both ways out; no server ran
    assert record.status == "failure"
    detail = check(record, "restore").detail
    assert "\n" not in detail
    assert "PostgreSQL 99.1" in detail and "PostgreSQL 99 or newer" in detail
    assert "pgtools layer or image" in detail and "verify.scratch_dsn" in detail
    assert record.server is None


def test_a_backup_larger_than_the_scratch_space_is_refused_saying_how_much(
    runtime: Runtime, backup: BackupRecord, scratch_root: Path
) -> None:
    # Given a backup whose database was far larger than the free scratch space
    huge = backup.model_copy(update={"database_size_bytes": 1 << 50})

    # When it is verified
    record = verify_backup(runtime, "app", huge)

    # Then it fails before starting a server, saying what it needs, what there is, and what to raise
    assert record.status == "failure"
    detail = check(record, "restore").detail
    assert detail.startswith("scratch space exhausted: the restore needs about 1,073,741,9")
    assert "MB free" in detail and "VerifyEphemeralStorageMB" in detail and "10240 MB" in detail
    assert record.server is None


@pytest.fixture
def small_scratch(scratch_root: Path) -> Iterator[Path]:
    """A 128 MB file system as the scratch directory: a disk that really fills up."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=128m,mode=0755", "tmpfs", str(scratch_root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.strip()}")
    try:
        yield scratch_root
        assert sorted(path.name for path in scratch_root.iterdir()) == []
    finally:
        subprocess.run(["umount", str(scratch_root)], check=False)


def test_a_server_that_runs_out_of_space_is_a_failure_saying_what_to_raise(
    source_db: str, make_config: Any, small_scratch: Path
) -> None:
    # Given a backup holding ~150 MB of table data, whose record underestimates its size
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create table payload as select g, repeat(md5(g::text), 30) as filler"
            " from generate_series(1, 150000) g"
        )
    config, _ = make_config(source_db, verify=dict(SAMPLE_CHECKS))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")
    assert backup.status == "completed", backup.error
    underestimated = backup.model_copy(update={"database_size_bytes": 0})

    # When it is verified into the 128 MB scratch directory
    record = verify_backup(runtime, "app", underestimated)

    # Then the restore failed with the scratch-space message instead of the server's words
    assert record.status == "failure"
    detail = check(record, "restore").detail
    assert detail.startswith("scratch space exhausted:"), detail
    assert "VerifyEphemeralStorageMB" in detail


# roles: a blank server has none of them -------------------------------------------------------


@pytest.fixture
def owned_db(admin_dsn: str) -> Iterator[RolesDatabase]:
    database = RolesDatabase(admin_dsn, "vt")
    database.create()
    try:
        yield database
    finally:
        database.drop()


def roles_backup(owned_db: RolesDatabase, make_config: Any) -> tuple[Runtime, BackupRecord]:
    config, _ = make_config(
        owned_db.dsn,
        verify={"critical_tables": ["billing.invoices"], "rls_tables": ["billing.invoices"]},
    )
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    return runtime, record


def test_a_database_whose_policies_name_roles_verifies_on_the_throwaway_server(
    owned_db: RolesDatabase, make_config: Any, scratch_root: Path
) -> None:
    # Given a backup of a database with an owner, a grantee and a policy role
    runtime, backup = roles_backup(owned_db, make_config)

    # When it is verified with no scratch server configured
    record = verify_backup(runtime, "app", backup)

    # Then it succeeded: the roles came from the backup's roles object onto the blank server
    assert record.status == "success", record.error_details
    roles = check(record, "roles and grants")
    assert roles.status == "passed", roles.detail
    for role in owned_db.referenced_roles():
        assert role in roles.detail
    assert "removed with the throwaway server" in roles.detail


def test_the_same_backup_without_its_roles_object_fails(
    owned_db: RolesDatabase, make_config: Any, scratch_root: Path
) -> None:
    # Given the same kind of backup whose roles object was deleted
    runtime, backup = roles_backup(owned_db, make_config)
    assert backup.globals is not None
    destroy_every_version(runtime.store.s3, backup.bucket, backup.globals.key)

    # When it is verified on a throwaway server
    record = verify_backup(runtime, "app", backup)

    # Then it failed: a blank server has none of the roles the database needs
    assert record.status == "failure"
    assert check(record, "restore").status == "failed"
    assert record.error_details and "roles object" in record.error_details


# a restore in one transaction -----------------------------------------------------------------

MANY_TABLES = 1600


def test_a_database_of_thousands_of_relations_restores_in_one_transaction(
    source_db: str, make_config: Any, scratch_root: Path
) -> None:
    # Given a backup of a database with 1,600 more tables, each with a sequence and a primary key
    # index: 4,800 relations locked by the one restore transaction, more than PostgreSQL's default
    # lock table holds
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "do $$ begin for i in 1.." + str(MANY_TABLES) + " loop "
            "execute format('create table many_%s (id serial primary key)', i); end loop; end $$"
        )
    config, _ = make_config(source_db, verify=dict(SAMPLE_CHECKS))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")
    assert backup.status == "completed", backup.error

    # When it is verified with no scratch server configured
    record = verify_backup(runtime, "app", backup)

    # Then it restored and passed: the throwaway server's lock table holds the whole restore
    assert record.status == "success", record.error_details
    assert check(record, "restore").status == "passed"
    assert record.server is not None and record.server.settings["max_locks_per_transaction"] == "1024"


# extensions ----------------------------------------------------------------------------------


@pytest.fixture
def extension_dir() -> Iterator[Path]:
    """An extension installed only where the source database's session looks for it
    (PostgreSQL 18's extension_control_path): the throwaway server will not have it."""
    directory = Path(tempfile.mkdtemp(prefix="drsentry-test-extension-"))
    (directory / "extension").mkdir()
    (directory / "extension" / "drsentry_probe.control").write_text(
        "default_version = '1.0'\nrelocatable = true\ncomment = 'a test extension'\n"
    )
    (directory / "extension" / "drsentry_probe--1.0.sql").write_text(
        "create function drsentry_probe() returns int language sql as 'select 1';\n"
    )
    for path in (directory, directory / "extension"):
        path.chmod(0o755)
    for path in (directory / "extension").iterdir():
        path.chmod(0o644)
    try:
        yield directory
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=False)


def test_an_extension_the_server_lacks_fails_in_one_line(
    source_db: str, make_config: Any, scratch_root: Path, extension_dir: Path
) -> None:
    # Given a backup of a database that created an extension the throwaway server does not have
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(f"set extension_control_path = '$system:{extension_dir}'".encode())
        conn.execute("create extension drsentry_probe")
    config, _ = make_config(source_db, verify=dict(SAMPLE_CHECKS))
    runtime = build_runtime(config)
    backup = backup_target(runtime, "app")
    assert backup.status == "completed", backup.error

    # When it is verified with no scratch server configured
    record = verify_backup(runtime, "app", backup)

    # Then it failed before the restore, in one line naming the extension and both ways out
    assert record.status == "failure"
    restore = check(record, "restore")
    assert restore.status == "failed"
    assert "\n" not in restore.detail
    assert restore.detail.startswith("the backup needs extension drsentry_probe, which the throwaway")
    assert "pgtools layer or image that has drsentry_probe" in restore.detail
    assert "verify.scratch_dsn" in restore.detail
    assert record.server is not None and record.server.kind == "throwaway"
