"""Verify restores as a real recovery does (roles from the backup's roles object, owners and
grants kept) and proves it with the `roles and grants` check: on the standing scratch server,
on a brand-new server that has no roles at all, and against a roles object that lacks a role.

Every test ends with no `drsentry_verify_%` database left on either server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from roles_database import RolesDatabase

from drsentry.core.records import BackupRecord, VerificationRecord
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import build_runtime
from drsentry.jobs.verify.job import verify_backup

pytestmark = pytest.mark.integration


def scratch_databases(dsn: str) -> list[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(r"select datname from pg_database where datname like 'drsentry\_verify\_%'")
        return [str(row[0]) for row in rows.fetchall()]


def role_names(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {str(row[0]) for row in conn.execute("select rolname from pg_roles").fetchall()}


def check(record: VerificationRecord, name: str) -> Any:
    return next(c for c in record.checks if c.name == name)


@pytest.fixture
def owned_db(admin_dsn: str) -> Iterator[RolesDatabase]:
    database = RolesDatabase(admin_dsn, "vr")
    database.create()
    try:
        yield database
    finally:
        database.drop()
        assert scratch_databases(admin_dsn) == []


def verify_section(scratch_dsn: str) -> dict[str, Any]:
    return {
        "verify": {
            "scratch_dsn": scratch_dsn,
            "critical_tables": ["billing.invoices"],
            "rls_tables": ["billing.invoices"],
            "min_size": "1MB",
        }
    }


def backed_up(owned_db: RolesDatabase, make_config: Any, scratch_dsn: str) -> tuple[Any, BackupRecord]:
    config, _ = make_config(owned_db.dsn, **verify_section(scratch_dsn))
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    assert record.globals is not None
    assert set(owned_db.referenced_roles()) <= set(record.globals.roles)
    return runtime, record


def test_owned_and_granted_database_verifies_with_roles_and_grants_passing(
    owned_db: RolesDatabase, make_config: Any, admin_dsn: str
) -> None:
    # Given a backup of a database with an owner, a grantee and a policy role
    runtime, backup = backed_up(owned_db, make_config, admin_dsn)

    # When it is verified on the standing scratch server (which has those roles)
    record = verify_backup(runtime, "app", backup)

    # Then it succeeded; `roles and grants` passed comparing the manifest's owners and grants
    assert record.status == "success", record.error_details
    roles = check(record, "roles and grants")
    assert roles.severity == "critical" and roles.status == "passed", roles.detail
    assert "none had to be created on the scratch server" in roles.detail
    assert "equal the manifest's" in roles.detail
    assert check(record, "restore").status == "passed"


def test_same_backup_verifies_on_a_brand_new_server_creating_the_roles_there(
    owned_db: RolesDatabase, make_config: Any, admin_dsn: str, blank_pg_server: Any
) -> None:
    # Given a backup, and a brand-new server without any of its roles as the scratch server
    blank_dsn = str(blank_pg_server.dsn("postgres"))
    assert not set(owned_db.referenced_roles()) & role_names(blank_dsn)
    runtime, backup = backed_up(owned_db, make_config, blank_dsn)
    try:
        # When it is verified there
        record = verify_backup(runtime, "app", backup)

        # Then it succeeded: the roles were created from the roles object before pg_restore, and the
        # restored table kept its owner and grants (compared with the manifest)
        assert record.status == "success", record.error_details
        roles = check(record, "roles and grants")
        assert roles.status == "passed", roles.detail
        for role in owned_db.referenced_roles():
            assert role in roles.detail
        assert "they stay there" in roles.detail
        assert "owners and grants of" in roles.detail and "equal the manifest's" in roles.detail
        assert set(owned_db.referenced_roles()) <= role_names(blank_dsn)
        # ... with the owner's membership, as the roles object had it
        with psycopg.connect(blank_dsn, autocommit=True) as conn:
            member = conn.execute(
                "select pg_has_role(%s, %s, 'member')", (owned_db.owner, owned_db.owner_group)
            ).fetchone()
        assert member == (True,)
        assert scratch_databases(blank_dsn) == []
    finally:
        with psycopg.connect(blank_dsn, autocommit=True) as conn:
            for role in reversed(owned_db.referenced_roles()):
                conn.execute(f'drop role if exists "{role}"'.encode())


def without_role(runtime: Any, backup: BackupRecord, role: str) -> BackupRecord:
    """The backup's roles object rewritten without `role`, and a record that agrees with it."""
    assert backup.globals is not None
    s3 = runtime.clients.s3()
    text = s3.get_object(Bucket=backup.bucket, Key=backup.globals.key)["Body"].read().decode()
    assert role in text
    body = "".join(line for line in text.splitlines(keepends=True) if role not in line).encode()
    s3.put_object(Bucket=backup.bucket, Key=backup.globals.key, Body=body)
    rewritten = backup.globals.model_copy(
        update={"sha256": hashlib.sha256(body).hexdigest(), "size_bytes": len(body)}
    )
    return backup.model_copy(update={"globals": rewritten})


def test_roles_object_without_a_needed_role_fails_even_where_the_role_exists(
    owned_db: RolesDatabase, make_config: Any, admin_dsn: str
) -> None:
    # Given a backup whose roles object lacks the policy role (the standing scratch server has it)
    runtime, backup = backed_up(owned_db, make_config, admin_dsn)
    damaged = without_role(runtime, backup, owned_db.policy_role)

    # When it is verified
    record = verify_backup(runtime, "app", damaged)

    # Then it failed at `roles and grants`, naming the role a blank server could not create
    assert record.status == "failure"
    assert check(record, "object checksum").status == "passed"
    assert check(record, "restore").status == "passed"
    roles = check(record, "roles and grants")
    assert roles.status == "failed"
    assert f"roles {owned_db.policy_role} are referenced by the database but not in the backup's" in (
        roles.detail
    )
    assert record.error_details and owned_db.policy_role in record.error_details


def test_roles_object_without_a_needed_role_fails_the_restore_on_a_brand_new_server(
    owned_db: RolesDatabase, make_config: Any, blank_pg_server: Any
) -> None:
    # Given the same damage, verified on a brand-new server that has none of the roles
    blank_dsn = str(blank_pg_server.dsn("postgres"))
    runtime, backup = backed_up(owned_db, make_config, blank_dsn)
    damaged = without_role(runtime, backup, owned_db.policy_role)

    # When it is verified
    record = verify_backup(runtime, "app", damaged)

    # Then the restore failed before pg_restore, naming the role; no role was created there
    assert record.status == "failure"
    restore = check(record, "restore")
    assert restore.status == "failed"
    assert owned_db.policy_role in restore.detail
    assert "a blank server could not restore it" in restore.detail
    assert check(record, "roles and grants").status == "skipped"
    assert not set(owned_db.referenced_roles()) & role_names(blank_dsn)
    assert scratch_databases(blank_dsn) == []


def test_backup_from_before_roles_objects_skips_the_check_and_restores_as_before(
    owned_db: RolesDatabase, make_config: Any, admin_dsn: str
) -> None:
    # Given a backup record without a roles object (taken before drsentry stored roles)
    runtime, backup = backed_up(owned_db, make_config, admin_dsn)
    old = backup.model_copy(update={"globals": None})

    # When it is verified
    record = verify_backup(runtime, "app", old)

    # Then it succeeded; `roles and grants` is skipped and says why
    assert record.status == "success", record.error_details
    roles = check(record, "roles and grants")
    assert roles.status == "skipped"
    assert roles.detail.startswith("the backup predates roles objects")
