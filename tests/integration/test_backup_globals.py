"""The roles object beside every dump (`pg_dumpall --globals-only`), on a real PostgreSQL and
moto's server over HTTP: what it holds, which roles the record lists, the owners and grants in
the manifest, a backup user that cannot read passwords, a failing pg_dumpall, and the object
following the dump into the replica, the archive and verification."""

from __future__ import annotations

import hashlib
import json
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from locked_objects import destroy_every_version
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from roles_database import RolesDatabase

from bucket_state import assert_withdrawn_then_purged
from conftest import KNOWN_SECRETS, REPLICA_REGION
from drsentry.adapters.pgtools import find_tool
from drsentry.core.records import BackupRecord
from drsentry.jobs.archive.job import archive_target
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.backup.rules import globals_key
from drsentry.jobs.replication.check import check_replication
from drsentry.jobs.runtime import build_runtime
from drsentry.jobs.verify.job import verify_backup

pytestmark = pytest.mark.integration


def _with(dsn: str, **changes: str) -> str:
    parts = conninfo_to_dict(dsn)
    parts.update(changes)
    return make_conninfo(**{name: str(value) for name, value in parts.items()})


def _body(clients: Any, bucket: str, key: str, region: str | None = None) -> bytes:
    s3 = clients.s3(region) if region else clients.s3()
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _tags(clients: Any, bucket: str, key: str) -> dict[str, str]:
    tags = clients.s3().get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {tag["Key"]: tag["Value"] for tag in tags}


@pytest.fixture
def roles_db(admin_dsn: str) -> Iterator[RolesDatabase]:
    database = RolesDatabase(admin_dsn, "gl")
    database.create()
    try:
        yield database
    finally:
        database.drop()


def test_backup_stores_the_roles_object_and_lists_the_roles_the_database_references(
    roles_db: RolesDatabase, make_config: Any, clients: Any
) -> None:
    # Given a database whose table is owned by one role, granted to a second, with an RLS
    # policy naming a third (the owner a member of a fourth) and a fifth role it never names
    config, _ = make_config(roles_db.dsn)

    # When it is backed up by a superuser
    record = backup_target(build_runtime(config), "app")

    # Then the roles object is beside the dump, its tags and the record matching its bytes
    assert record.status == "completed", record.error
    cluster_globals = record.globals
    assert cluster_globals is not None
    assert cluster_globals.key == globals_key(config.storage.prefix, "app", record.backup_id)
    body = _body(clients, record.bucket, cluster_globals.key)
    assert hashlib.sha256(body).hexdigest() == cluster_globals.sha256
    assert len(body) == cluster_globals.size_bytes
    assert _tags(clients, record.bucket, cluster_globals.key) == {
        "sha256": cluster_globals.sha256,
        "size-bytes": str(cluster_globals.size_bytes),
    }
    head = clients.s3().head_object(Bucket=record.bucket, Key=cluster_globals.key)
    assert head["ServerSideEncryption"] in {"AES256", "aws:kms"}
    # and it creates the roles, their membership, with the passwords a superuser can read
    text = body.decode()
    for role in (roles_db.owner, roles_db.reader, roles_db.policy_role, roles_db.owner_group):
        assert f"CREATE ROLE {role};" in text
    assert f"GRANT {roles_db.owner_group} TO {roles_db.owner}" in text
    assert cluster_globals.role_passwords is True
    # and the record lists exactly the roles the database references: not the unrelated one
    assert cluster_globals.roles == sorted(
        [roles_db.owner, roles_db.reader, roles_db.policy_role, roles_db.owner_group, roles_db.admin_user()]
    )
    assert roles_db.unrelated not in cluster_globals.roles
    # and the catalog and the manifest carry the same, with every table's owner and grants
    assert build_runtime(config).catalog.get_backup(record.backup_id).globals == cluster_globals
    manifest = json.loads(_body(clients, record.bucket, record.manifest_key))
    assert manifest["globals"] == cluster_globals.model_dump()
    owner_privileges = "DELETE,INSERT,MAINTAIN,REFERENCES,SELECT,TRIGGER,TRUNCATE,UPDATE"
    assert manifest["acl"]["billing.invoices"] == {
        "owner": roles_db.owner,
        "grants": sorted([f"{roles_db.owner}={owner_privileges}", f"{roles_db.reader}=SELECT"]),
    }
    assert manifest["acl"]["billing.invoices_id_seq"]["owner"] == roles_db.owner


def test_backup_user_that_cannot_read_passwords_stores_roles_without_them(
    roles_db: RolesDatabase, make_config: Any, clients: Any
) -> None:
    # Given a login role that may dump the database (it reads every table, past RLS) but is no
    # superuser and cannot read pg_authid, as RDS's master user, and a role with a password
    backup_user = f"gl_backup_{secrets.token_hex(3)}"
    password = secrets.token_urlsafe(16)
    KNOWN_SECRETS.add(password)
    roles_db.extra_roles.append(backup_user)
    with psycopg.connect(roles_db.admin_dsn, autocommit=True) as conn:
        conn.execute(f"create role \"{backup_user}\" login bypassrls password '{password}'".encode())
        conn.execute(f"alter role \"{roles_db.reader}\" password 'reader-secret-1'".encode())
    with psycopg.connect(roles_db.dsn, autocommit=True) as conn:
        conn.execute(f'grant usage on schema billing to "{backup_user}"'.encode())
        conn.execute(f'grant select on all tables in schema billing to "{backup_user}"'.encode())
        conn.execute(f'grant select on all sequences in schema billing to "{backup_user}"'.encode())
    config, _ = make_config(_with(roles_db.dsn, user=backup_user, password=password))

    # When it backs the database up
    record = backup_target(build_runtime(config), "app")

    # Then the backup succeeds, and the roles come without passwords, and the record says so
    assert record.status == "completed", record.error
    assert record.globals is not None
    assert record.globals.role_passwords is False
    text = _body(clients, record.bucket, record.globals.key).decode()
    assert f"CREATE ROLE {roles_db.reader};" in text
    assert "PASSWORD" not in text
    assert roles_db.policy_role in record.globals.roles


def test_failing_pg_dumpall_fails_the_backup_and_leaves_nothing(
    roles_db: RolesDatabase, make_config: Any, clients: Any, tmp_path: Path
) -> None:
    # Given client tools whose pg_dumpall exits 1 (pg_dump and pg_restore the real ones)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        (bin_dir / tool).symlink_to(find_tool(tool).path)
    real = find_tool("pg_dumpall").path
    fake = bin_dir / "pg_dumpall"
    fake.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "--version" ]; then exec "{real}" --version; fi\n'
        'echo "pg_dumpall: error: query failed: permission denied for table pg_authid" >&2\n'
        "exit 1\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    config, _ = make_config(roles_db.dsn)
    config = config.model_copy(update={"pg_bin_dir": str(bin_dir)})

    # When the backup runs
    record = backup_target(build_runtime(config), "app")

    # Then it failed naming pg_dumpall, and no dump, manifest or roles object is left
    assert record.status == "failed"
    assert "pg_dumpall --globals-only exited with code 1" in (record.error or "")
    assert "permission denied for table pg_authid" in (record.error or "")
    assert build_runtime(config).catalog.get_backup(record.backup_id).status == "failed"
    assert_withdrawn_then_purged(build_runtime(config), "app")


def test_replica_copy_and_check_include_the_roles_object(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given a backup copied to the replica region right after it completed
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    assert record.replica == "ok", record.replica_detail
    assert record.globals is not None
    replica = config.storage.replica

    # Then the replica holds the roles object's bytes, with its tags
    body = _body(clients, replica.bucket, record.globals.key, REPLICA_REGION)
    assert hashlib.sha256(body).hexdigest() == record.globals.sha256
    replica_s3 = clients.s3(REPLICA_REGION)
    replica_tags = replica_s3.get_object_tagging(Bucket=replica.bucket, Key=record.globals.key)["TagSet"]
    assert {tag["Key"]: tag["Value"] for tag in replica_tags}["sha256"] == record.globals.sha256
    assert check_replication(runtime, "app").status == "ok"

    # When the replica's roles object is deleted, the replication check reports the backup missing
    replica_s3.delete_object(Bucket=replica.bucket, Key=record.globals.key)
    report = check_replication(runtime, "app")
    assert report.status == "failure"
    assert report.missing == [record.backup_id]
    assert runtime.catalog.get_backup(record.backup_id).replica == "missing"


def test_archive_copies_and_locks_the_roles_object(source_db: str, make_config: Any, clients: Any) -> None:
    # Given a real backup due for the archive
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    assert record.globals is not None

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then the roles object is in the archive bucket, readable (STANDARD), locked, same bytes
    assert report.ok and report.archived == 1, report
    archive = config.storage.archive
    head = clients.s3().head_object(Bucket=archive.bucket, Key=record.globals.key)
    assert "StorageClass" not in head  # S3 omits it for STANDARD
    assert head["ObjectLockMode"] == "COMPLIANCE"
    body = _body(clients, archive.bucket, record.globals.key)
    assert hashlib.sha256(body).hexdigest() == record.globals.sha256


def test_verification_fails_when_the_roles_object_is_deleted(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given a completed backup whose roles object was deleted since (under Object Lock, only by
    # someone who may bypass governance)
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record: BackupRecord = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    assert record.globals is not None
    destroy_every_version(clients.s3(), record.bucket, record.globals.key)

    # When it is verified
    verification = verify_backup(runtime, "app", record)

    # Then the verification fails at the object checksum, naming the missing roles object
    assert verification.status == "failure"
    checksum = next(check for check in verification.checks if check.name == "object checksum")
    assert checksum.status == "failed"
    assert f"roles object s3://{record.bucket}/{record.globals.key} is missing" in checksum.detail


def test_verification_fails_when_the_roles_object_is_altered(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given a completed backup whose roles object was overwritten with other text
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    assert record.globals is not None
    clients.s3().put_object(Bucket=record.bucket, Key=record.globals.key, Body=b"CREATE ROLE intruder;\n")

    # When it is verified, the object checksum fails
    verification = verify_backup(runtime, "app", record)
    assert verification.status == "failure"
    checksum = next(check for check in verification.checks if check.name == "object checksum")
    assert checksum.status == "failed"
    assert "does not match the catalog's" in checksum.detail
