"""Recovery fidelity: a backup of a database that uses what real applications use comes back
# ruff: noqa: E501
whole (contents, sequences, large objects, owners, grants) into an empty database, into a
brand-new server that has none of its roles, and one partitioned table or one schema alone.

The database is tests/fixtures/fidelity.sql with its roles renamed per test (roles are
cluster-wide and the servers are shared by the session). The backup, its roles object
included, is taken by `drsentry run backup`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from drsentry.local.sample import drop_database, with_dbname
from drsentry.operator.cli.app import app

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).parent.parent / "fixtures" / "fidelity.sql"
ROLES = ("fidelity_owner", "fidelity_reader", "fidelity_app", "authenticated")
REGION = "us-east-1"


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str


def drsentry(*args: str) -> Run:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return Run(result.exit_code, result.stdout, result.stderr)


@dataclass
class Fidelity:
    config: Path
    admin_dsn: str
    source_dsn: str
    backup_id: str
    roles: dict[str, str]  # fixture name -> this test's name


def create_fidelity_database(admin_dsn: str, dbname: str, prefix: str) -> tuple[str, dict[str, str]]:
    roles = {role: f"{prefix}_{role}" for role in ROLES}
    text = FIXTURE.read_text()
    # Longest first: no role name is a prefix of another today, but keep it safe.
    for role in sorted(ROLES, key=len, reverse=True):
        text = text.replace(f"to {role}", f"to {roles[role]}").replace(f"role {role}", f"role {roles[role]}")
        text = text.replace(f"authorization {role}", f"authorization {roles[role]}")
        text = text.replace(f"owner to {role}", f"owner to {roles[role]}")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"create role {roles['fidelity_owner']}")
        conn.execute(f"create role {roles['fidelity_reader']}")
        conn.execute(f"create role {roles['fidelity_app']} login")
        conn.execute(f"create role {roles['authenticated']} nologin")
        conn.execute(f"grant {roles['fidelity_reader']} to {roles['fidelity_app']}")
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    dsn = with_dbname(admin_dsn, dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(text)
    return dsn, roles


def write_config(directory: Path, source_dsn: str, admin_dsn: str) -> Path:
    from drsentry.adapters.aws import AwsClients
    from drsentry.core.config import dump_config, parse_config
    from drsentry.local.provision import provision

    suffix = secrets.token_hex(4)
    raw = {
        "rpo": "1h",
        "rto": "15m",
        "storage": {"bucket": f"fid-primary-{suffix}", "region": REGION},
        "catalog": {"table": f"fid-catalog-{suffix}"},
        "notifications": {"sns_topic_arn": f"arn:aws:sns:{REGION}:123456789012:fid-alerts-{suffix}"},
        "targets": [
            {
                "name": "fid",
                "dsn": source_dsn,
                "verify": {"scratch_dsn": admin_dsn, "critical_tables": ["profiles"]},
            }
        ],
    }
    config = parse_config(yaml.safe_dump(raw))
    provision(config, AwsClients(REGION), secret_values={})
    path = directory / f"drsentry-{suffix}.yaml"
    path.write_text(dump_config(config))
    return path


@pytest.fixture(scope="module")
def fidelity(
    aws_endpoint: str, pg_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fidelity]:
    admin_dsn = str(pg_server.dsn("postgres"))
    prefix = f"f{secrets.token_hex(3)}"
    source_name = f"fidsrc_{prefix}"
    source_dsn, roles = create_fidelity_database(admin_dsn, source_name, prefix)
    config = write_config(tmp_path_factory.mktemp("fidelity"), source_dsn, admin_dsn)
    backup = drsentry("run", "backup", "--config", str(config), "--json")
    assert backup.exit_code == 0, backup.stderr
    backup_id = json.loads(backup.stdout)["backups"][0]["backup_id"]
    yield Fidelity(config, admin_dsn, source_dsn, backup_id, roles)
    drop_database(admin_dsn, source_name)


# what a user checks after a recovery ------------------------------------------------------

_TABLES = """
select n.nspname, c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'm') and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_%' order by 1, 2
"""
_OWNERS_AND_GRANTS = """
select c.relkind::text || ' ' || n.nspname || '.' || c.relname || ' ' || pg_get_userbyid(c.relowner)
       || ' ' || coalesce(c.relacl::text, '-')
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where c.relkind in ('r', 'p', 'm', 'S', 'v') and n.nspname not in ('pg_catalog', 'information_schema')
  and n.nspname not like 'pg\\_%'
union all
select 'schema ' || nspname || ' ' || pg_get_userbyid(nspowner) || ' ' || coalesce(nspacl::text, '-')
from pg_namespace where nspname not in ('pg_catalog', 'information_schema') and nspname not like 'pg\\_%'
union all
select 'policy ' || schemaname || '.' || tablename || ' ' || policyname || ' ' || roles::text
from pg_policies
union all
select 'default acl ' || pg_get_userbyid(defaclrole) || ' ' || defaclacl::text from pg_default_acl
order by 1
"""


def contents(dsn: str) -> dict[str, str]:
    """Table -> md5 of every row's text in a fixed order; sequence values; large objects."""
    facts: dict[str, str] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("set row_security = off")
        for schema, name in conn.execute(_TABLES).fetchall():
            table = sql.Identifier(schema, name)
            row = conn.execute(
                sql.SQL(
                    "select count(*), md5(coalesce(string_agg(t::text, '|' order by t::text), '')) from {} t"
                ).format(table)
            ).fetchone()
            facts[f"{schema}.{name}"] = f"{row[0]} {row[1]}"  # type: ignore[index]
        for schema, name, value in conn.execute(
            "select schemaname, sequencename, last_value from pg_sequences order by 1, 2"
        ):
            facts[f"sequence {schema}.{name}"] = str(value)
        for owner, digest in conn.execute(
            "select pg_get_userbyid(lomowner), md5(lo_get(oid)) from pg_largeobject_metadata order by 2"
        ):
            facts[f"large object {digest}"] = owner
    return facts


def owners_and_grants(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [str(row[0]) for row in conn.execute(_OWNERS_AND_GRANTS)]


def role_names(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {str(row[0]) for row in conn.execute("select rolname from pg_roles")}


@pytest.fixture
def new_name() -> str:
    return f"fidrst_{secrets.token_hex(4)}"


def restore(fidelity: Fidelity, dsn: str, *options: str) -> Run:
    return drsentry(
        "restore", fidelity.backup_id, "--to", dsn, "--yes", "--config", str(fidelity.config), *options
    )


# (a) an empty database on the same server ------------------------------------------------


def test_a_whole_restore_on_the_same_server_keeps_contents_owners_and_grants(
    fidelity: Fidelity, new_name: str
) -> None:
    dsn = with_dbname(fidelity.admin_dsn, new_name)
    try:
        run = restore(fidelity, dsn)
        assert run.exit_code == 0, run.stderr
        assert "every role the backup needs exists" in run.stdout
        assert contents(dsn) == contents(fidelity.source_dsn)
        assert owners_and_grants(dsn) == owners_and_grants(fidelity.source_dsn)
        assert any(fidelity.roles["fidelity_reader"] in line for line in owners_and_grants(dsn))
    finally:
        drop_database(fidelity.admin_dsn, new_name)


# (b) a brand-new server: roles come from the backup's globals -----------------------------


def test_a_whole_restore_into_a_blank_server_creates_the_roles_and_keeps_owners_and_grants(
    fidelity: Fidelity, blank_pg_server: Any, new_name: str
) -> None:
    blank_admin = str(blank_pg_server.dsn("postgres"))
    assert not set(fidelity.roles.values()) & role_names(blank_admin)
    dsn = with_dbname(blank_admin, new_name)
    run = restore(fidelity, dsn)
    assert run.exit_code == 0, run.stderr
    created = sorted(fidelity.roles.values())
    assert f"to create: {', '.join(created)}" in " ".join(run.stdout.split())
    assert set(created) <= role_names(blank_admin)
    assert "roles without a password" in run.stdout and fidelity.roles["fidelity_app"] in run.stdout
    assert contents(dsn) == contents(fidelity.source_dsn)
    assert owners_and_grants(dsn) == owners_and_grants(fidelity.source_dsn)
    # the membership came back too
    with psycopg.connect(blank_admin) as conn:
        assert conn.execute(
            "select pg_has_role(%s, %s, 'member')",
            (fidelity.roles["fidelity_app"], fidelity.roles["fidelity_reader"]),
        ).fetchone() == (True,)


def test_a_user_who_may_not_create_roles_is_refused_naming_them_and_nothing_changes(
    fidelity: Fidelity, blank_pg_server: Any, new_name: str
) -> None:
    # Given a blank server (a fresh prefix's roles are missing) and a plain user with CREATEDB only
    blank_admin = str(blank_pg_server.dsn("postgres"))
    plain, password = f"plain_{secrets.token_hex(3)}", secrets.token_hex(12)
    with psycopg.connect(blank_admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create role {} login createdb password {}").format(
                sql.Identifier(plain), sql.Literal(password)
            )
        )
    roles_before = role_names(blank_admin)
    prefix = f"f{secrets.token_hex(3)}"
    source_name = f"fidsrc_{prefix}"
    source_dsn, roles = create_fidelity_database(fidelity.admin_dsn, source_name, prefix)
    try:
        config = write_config(fidelity.config.parent, source_dsn, fidelity.admin_dsn)
        backup = drsentry("run", "backup", "--config", str(config), "--json")
        assert backup.exit_code == 0, backup.stderr
        backup_id = json.loads(backup.stdout)["backups"][0]["backup_id"]
        target = make_conninfo(with_dbname(blank_admin, new_name), user=plain, password=password)
        assert plain in target
        # When that user restores there
        run = drsentry("restore", backup_id, "--to", target, "--yes", "--config", str(config))
        # Then one line names the missing roles, exit 2, and no role or database was created
        assert run.exit_code == 2
        assert "may not create roles" in run.stderr
        for role in roles.values():
            assert role in run.stderr
        assert role_names(blank_admin) == roles_before
        with psycopg.connect(blank_admin) as conn:
            assert (
                conn.execute("select 1 from pg_database where datname = %s", (new_name,)).fetchone() is None
            )
    finally:
        drop_database(fidelity.admin_dsn, source_name)


# (c) one partitioned table; (d) one schema -------------------------------------------------


def test_a_partitioned_table_alone_comes_back_with_every_partition_into_an_empty_database(
    fidelity: Fidelity, new_name: str
) -> None:
    dsn = with_dbname(fidelity.admin_dsn, new_name)
    try:
        run = restore(fidelity, dsn, "--table", "audit.events")
        assert run.exit_code == 0, run.stderr
        restored = contents(dsn)
        source = contents(fidelity.source_dsn)
        expected = ["audit.events", "audit.events_2026_01", "audit.events_2026_02", "audit.events_default"]
        assert sorted(t for t in restored if not t.startswith(("sequence", "large"))) == expected
        for table in expected:
            assert restored[table] == source[table], table
        assert restored["sequence audit.events_id_seq"] == source["sequence audit.events_id_seq"]
        # the schema was created, owned as in the backup, with its grants
        schema_line = next(
            line for line in owners_and_grants(fidelity.source_dsn) if line.startswith("schema audit ")
        )
        assert schema_line in owners_and_grants(dsn)
    finally:
        drop_database(fidelity.admin_dsn, new_name)


def test_a_schema_with_quoted_names_comes_back_whole(fidelity: Fidelity, new_name: str) -> None:
    dsn = with_dbname(fidelity.admin_dsn, new_name)
    try:
        run = restore(fidelity, dsn, "--schema", "Billing Data")
        assert run.exit_code == 0, run.stderr
        restored = contents(dsn)
        assert (
            restored["Billing Data.Invoice Lines"]
            == contents(fidelity.source_dsn)["Billing Data.Invoice Lines"]
        )
        source_lines = [line for line in owners_and_grants(fidelity.source_dsn) if "Billing Data" in line]
        assert source_lines and set(source_lines) <= set(owners_and_grants(dsn))
    finally:
        drop_database(fidelity.admin_dsn, new_name)


def test_a_quoted_table_name_is_restored(fidelity: Fidelity, new_name: str) -> None:
    dsn = with_dbname(fidelity.admin_dsn, new_name)
    try:
        run = restore(fidelity, dsn, "--table", '"Billing Data"."Invoice Lines"')
        assert run.exit_code == 0, run.stderr
        assert (
            contents(dsn)["Billing Data.Invoice Lines"]
            == contents(fidelity.source_dsn)["Billing Data.Invoice Lines"]
        )
    finally:
        drop_database(fidelity.admin_dsn, new_name)


@pytest.mark.parametrize(
    ("option", "value", "listed"),
    [("--table", "audit.nope", "audit.events_default"), ("--schema", "nope", "Billing Data, audit, public")],
)
def test_an_unknown_table_or_schema_lists_what_the_backup_has(
    fidelity: Fidelity, new_name: str, option: str, value: str, listed: str
) -> None:
    dsn = with_dbname(fidelity.admin_dsn, new_name)
    run = restore(fidelity, dsn, option, value)
    assert run.exit_code == 2
    assert value in run.stderr and listed in run.stderr
    with psycopg.connect(fidelity.admin_dsn) as conn:
        assert conn.execute("select 1 from pg_database where datname = %s", (new_name,)).fetchone() is None
