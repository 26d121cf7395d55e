"""adapters/postgres.py against a real PostgreSQL: what each psycopg failure becomes, so that
jobs can act on it without importing psycopg."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import psycopg
import pytest

from drsentry.adapters import postgres
from drsentry.adapters.secrets import make_conninfo
from drsentry.core.errors import (
    ConnectionLost,
    CredentialsError,
    DatabaseExists,
    PostgresError,
    PostgresUnreachable,
    StatementTimedOut,
)
from drsentry.local.embedded_pg import free_port

pytestmark = pytest.mark.integration

APPLICATION = "drsentry-adapter-test"


@pytest.fixture
def session(admin_dsn: str) -> Iterator[postgres.Session]:
    with postgres.connect(admin_dsn, application_name=APPLICATION) as opened:
        yield opened


@pytest.fixture
def database_name(admin_dsn: str) -> Iterator[str]:
    name = f"drsentry_adapter_{secrets.token_hex(4)}"
    yield name
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"drop database if exists {name} with (force)".encode())


def databases(admin_dsn: str, name: str) -> list[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute("select datname from pg_database where datname = %s", (name,)).fetchall()
    return [str(row[0]) for row in rows]


def test_unreachable_server_names_it_without_the_password() -> None:
    # Given a DSN with a password, pointing at a port nobody listens on
    port = free_port()
    dsn = f"postgresql://postgres:pw-adapter-n0body@127.0.0.1:{port}/postgres"

    # When a session is opened
    with pytest.raises(PostgresUnreachable) as raised:
        postgres.connect(dsn, application_name=APPLICATION, connect_timeout=2)

    # Then the error names the server and database, not the password
    message = str(raised.value)
    assert message.startswith(f"postgres@127.0.0.1:{port}/postgres: ")
    assert "pw-adapter-n0body" not in message


def test_malformed_dsn_is_a_credentials_error_that_does_not_echo_it() -> None:
    with pytest.raises(CredentialsError, match="not a valid PostgreSQL connection string") as raised:
        postgres.require_dsn("host=db password=hunter2 port", "the scratch DSN")
    assert "hunter2" not in str(raised.value)


def test_statement_past_its_timeout_is_statement_timed_out_and_the_session_lives_on(
    session: postgres.Session,
) -> None:
    # When a read-only statement runs longer than its limit
    with pytest.raises(StatementTimedOut, match="statement timeout"):
        session.read_only("select pg_sleep(3) is not null", timeout_seconds=1.0)

    # Then the same session still answers
    assert session.read_only("select true", timeout_seconds=5.0) == [(True,)]


def test_read_only_statement_cannot_write(session: postgres.Session, database_name: str) -> None:
    with pytest.raises(PostgresError, match="read-only transaction") as raised:
        session.read_only(f"create table {database_name} (id int)", timeout_seconds=5.0)
    assert not isinstance(raised.value, ConnectionLost | StatementTimedOut)


def test_session_killed_mid_statement_is_connection_lost(session: postgres.Session) -> None:
    with pytest.raises(ConnectionLost):
        session.read_only("select pg_terminate_backend(pg_backend_pid())", timeout_seconds=5.0)


def test_database_created_twice_is_database_exists_and_dropped_once_is_gone(
    session: postgres.Session, admin_dsn: str, database_name: str
) -> None:
    # Given a database created and commented
    session.create_database(database_name)
    session.comment_on_database(database_name, "drsentry adapter test")

    # When it is created again
    with pytest.raises(DatabaseExists):
        session.create_database(database_name)

    # Then it is listed with its comment and no session; dropping it (with a session on it) removes it
    [listed] = session.databases_starting_with(database_name)
    assert (listed.name, listed.comment, listed.sessions) == (database_name, "drsentry adapter test", 0)
    with postgres.connect(make_conninfo(admin_dsn, dbname=database_name), application_name=APPLICATION):
        session.drop_database(database_name)
    assert databases(admin_dsn, database_name) == []


def test_databases_starting_with_treats_underscore_as_a_character(
    session: postgres.Session, admin_dsn: str, database_name: str
) -> None:
    # Given a database whose name matches the prefix only if `_` were a wildcard
    lookalike = database_name.replace("drsentry_adapter_", "drsentryXadapter_")
    session.create_database(lookalike)
    try:
        # When databases starting with the prefix are listed
        listed = session.databases_starting_with("drsentry_adapter_")

        # Then the lookalike is not among them
        assert lookalike not in [database.name for database in listed]
    finally:
        session.drop_database(lookalike)
    assert databases(admin_dsn, lookalike) == []
