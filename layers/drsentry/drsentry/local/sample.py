"""Create the sample application database used by `make demo` and the tests."""

from __future__ import annotations

from importlib import resources

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SAMPLE_TABLES = ("organizations", "profiles", "services", "appointments", "sessions")
SAMPLE_FUNCTION = "book_appointment_with_lock"
SAMPLE_RLS_TABLE = "profiles"


def with_dbname(dsn: str, dbname: str) -> str:
    return make_conninfo(dsn, dbname=dbname)


def database_exists(admin_dsn: str, dbname: str) -> bool:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        return row is not None


def create_sample_database(admin_dsn: str, dbname: str, scale: int = 1, *, replace: bool = False) -> str:
    """Create `dbname` with the sample schema and data; return its DSN.

    An existing database is kept as it is unless `replace` is set.
    """
    if not 1 <= scale <= 10_000:
        raise ValueError(f"scale must be between 1 and 10000, got {scale}")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        exists = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if exists and not replace:
            return with_dbname(admin_dsn, dbname)
        if exists:
            conn.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(dbname)))
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(dbname)))
    script = resources.files("drsentry.local").joinpath("sample.sql").read_text(encoding="utf-8")
    dsn = with_dbname(admin_dsn, dbname)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(script.replace(":scale", str(int(scale))).encode())
    return dsn


def drop_database(admin_dsn: str, dbname: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(dbname)))


def dbname_of(dsn: str) -> str:
    return str(conninfo_to_dict(dsn).get("dbname", ""))
