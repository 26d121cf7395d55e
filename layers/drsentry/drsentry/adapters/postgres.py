"""PostgreSQL sessions: connect, read what a database holds, run a read-only statement under a
time limit, create and drop databases.

Backup's exported snapshot (`SnapshotSession`, read beside pg_dump) is at the end.

Jobs never see psycopg: every psycopg error leaves this module as a PostgresError
(drsentry.core.errors) whose message is the server's first line, sorted by what the caller
can still do: StatementTimedOut (the session is usable), ConnectionLost (it is not),
DatabaseExists, PostgresUnreachable (no session at all; the message names the server
without its password). No identifier is spliced into SQL as text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from drsentry.adapters import pgmeta
from drsentry.adapters.pgmeta import DatabaseFacts, can_read_role_passwords, read_facts, server_version
from drsentry.adapters.secrets import conninfo_to_dict, redact, sanitize
from drsentry.core.errors import (
    ConnectionLost,
    CredentialsError,
    DatabaseExists,
    PostgresError,
    PostgresUnreachable,
    StatementTimedOut,
)
from drsentry.core.observability import logger

CONNECT_TIMEOUT_SECONDS = 15
# What a partial restore may need to create first, as pg_restore -l names it.
DEFINED_OBJECTS_SQL = """
select 'SCHEMA', '-', nspname from pg_namespace
union all
select 'EXTENSION', '-', extname from pg_extension
union all
select case t.typtype when 'd' then 'DOMAIN' else 'TYPE' end, n.nspname, t.typname
from pg_type t join pg_namespace n on n.oid = t.typnamespace
where t.typtype in ('b', 'c', 'd', 'e', 'r', 'm')
  and (t.typrelid = 0 or (select c.relkind from pg_class c where c.oid = t.typrelid) = 'c')
union all
select 'FUNCTION', n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
"""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def require_dsn(dsn: str, whose: str) -> None:
    """CredentialsError unless `dsn` parses; the DSN is never echoed (it may hold a password)."""
    try:
        conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise CredentialsError(f"{whose} is not a valid PostgreSQL connection string (not shown)") from exc


def _milliseconds(seconds: float) -> int:
    # At least a second: a limit of a few milliseconds would cancel even a catalog query.
    return max(int(seconds * 1000), 1000)


@dataclass(frozen=True)
class ServerDatabase:
    """A database on the server, with its comment and how many sessions are connected to it."""

    name: str
    comment: str | None
    sessions: int


class Session:
    """One autocommit session; use it as a context manager, which closes it."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._translated():
            self._conn.__exit__(exc_type, exc, tb)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except psycopg.errors.QueryCanceled as exc:
            raise StatementTimedOut(_first_line(exc)) from exc
        except psycopg.Error as exc:
            if self._conn.broken:
                raise ConnectionLost(_first_line(exc)) from exc
            raise PostgresError(_first_line(exc)) from exc

    # what the database holds -----------------------------------------------------------------

    def database_and_version(self) -> tuple[str, str]:
        """The connected database's name and the server's `version()` text."""
        with self._translated():
            row = self._conn.execute("select current_database(), version()").fetchone()
        assert row is not None
        return str(row[0]), str(row[1])

    def table_names(self) -> set[str]:
        with self._translated():
            return set(pgmeta.table_names(self._conn))

    def count_rows(self) -> dict[str, int]:
        with self._translated():
            return pgmeta.count_rows(self._conn)

    def functions(self) -> list[str]:
        with self._translated():
            return pgmeta.functions(self._conn)

    def rls_tables(self) -> list[pgmeta.RlsTable]:
        with self._translated():
            return pgmeta.rls_tables(self._conn)

    def database_size(self) -> int:
        with self._translated():
            return pgmeta.database_size(self._conn)

    def schema_fingerprint(self) -> str:
        with self._translated():
            return pgmeta.schema_fingerprint(self._conn)

    def relation_acls(self) -> dict[str, pgmeta.RelationAcl]:
        """Owner and grants of every relation, as the backup's manifest records them."""
        with self._translated():
            return pgmeta.table_acls(self._conn)

    # session settings and statements ---------------------------------------------------------

    def without_row_security(self) -> None:
        """Row-level security off for this session (with FORCE RLS a query errors instead)."""
        with self._translated():
            self._conn.execute("set row_security = off")

    def limit_statements(self, seconds: float | None) -> None:
        """The server cancels any later statement of this session after `seconds` (None: never)."""
        milliseconds = 0 if seconds is None else _milliseconds(seconds)
        with self._translated():
            self._conn.execute(sql.SQL("set statement_timeout = {}").format(sql.Literal(milliseconds)))

    def read_only(self, statement: str, timeout_seconds: float) -> list[tuple[Any, ...]]:
        """Run one statement in a read-only transaction that is rolled back, cancelled after
        `timeout_seconds`; its rows (none when it returns no result)."""
        with self._translated(), self._conn.transaction(force_rollback=True):
            self._conn.execute("set transaction read only")
            self._conn.execute(
                sql.SQL("set local statement_timeout = {}").format(
                    sql.Literal(_milliseconds(timeout_seconds))
                )
            )
            # Binary results force the extended protocol, which takes exactly one statement:
            # a statement cannot `commit;` its way out of read-only.
            cursor = self._conn.execute(sql.SQL(statement), binary=True)
            return cursor.fetchall() if cursor.description else []

    # roles and definitions on the server (a restore's preparations) ---------------------------

    def role_names(self) -> set[str]:
        with self._translated():
            return {str(row[0]) for row in self._conn.execute("select rolname from pg_roles")}

    def may_create_roles(self) -> bool:
        """Superuser, or CREATEROLE (an RDS master user has it; a plain user does not)."""
        with self._translated():
            row = self._conn.execute(
                "select rolsuper or rolcreaterole from pg_roles where rolname = current_user"
            ).fetchone()
        return bool(row and row[0])

    def database_names(self) -> set[str]:
        with self._translated():
            return {str(row[0]) for row in self._conn.execute("select datname from pg_database")}

    def available_extensions(self) -> set[str]:
        """The extensions this server could create (their control files are installed)."""
        with self._translated():
            return {str(row[0]) for row in self._conn.execute("select name from pg_available_extensions")}

    def server_version(self) -> str:
        """`server_version` without the build suffix, e.g. `18.6`."""
        with self._translated():
            return server_version(self._conn)

    def defined_objects(self) -> set[tuple[str, str, str]]:
        """(kind, schema, name) of the schemas, extensions, types, domains and functions in this
        database, named as pg_restore lists them (schema "-" for schemas and extensions)."""
        with self._translated():
            rows = self._conn.execute(DEFINED_OBJECTS_SQL).fetchall()
        return {(str(kind), str(schema), str(name)) for kind, schema, name in rows}

    def run_role_statements(self, statements: list[tuple[str, str]]) -> None:
        """Run a restore's role statements (from the backup's checksummed globals) in one
        transaction: all roles are created or none. RoleNotCreated names the role that failed."""
        with self._translated(), self._conn.transaction():
            for role, statement in statements:
                try:
                    # One statement per execute (the extended protocol takes exactly one).
                    self._conn.execute(sql.SQL(statement))
                except psycopg.Error as exc:
                    raise RoleNotCreated(role, _first_line(exc)) from exc

    # databases on the server -----------------------------------------------------------------

    def connectable_databases(self) -> list[str]:
        """Every database of the server this session's user may back up: not a template, open to
        connections, and CONNECT granted to the user (by name, sorted)."""
        with self._translated():
            rows = self._conn.execute(
                """
                select datname from pg_database
                where not datistemplate and datallowconn
                  and has_database_privilege(datname, 'CONNECT')
                order by datname
                """
            ).fetchall()
        return [str(name) for (name,) in rows]

    def databases_starting_with(self, prefix: str) -> list[ServerDatabase]:
        pattern = re.sub(r"([\\%_])", r"\\\1", prefix) + "%"
        with self._translated():
            rows = self._conn.execute(
                """
                select d.datname, shobj_description(d.oid, 'pg_database'),
                       (select count(*) from pg_stat_activity a where a.datname = d.datname)
                from pg_database d
                where d.datname like %s
                """,
                (pattern,),
            ).fetchall()
        return [ServerDatabase(str(name), comment, int(sessions)) for name, comment, sessions in rows]

    def create_database(self, name: str) -> None:
        """An empty database from template0: nothing installed in template1 may collide with
        what a restored archive creates. DatabaseExists when the name is taken."""
        with self._translated():
            try:
                self._conn.execute(
                    sql.SQL("create database {} template template0").format(sql.Identifier(name))
                )
            except psycopg.errors.DuplicateDatabase as exc:
                raise DatabaseExists(_first_line(exc)) from exc

    def comment_on_database(self, name: str, comment: str) -> None:
        with self._translated():
            self._conn.execute(
                sql.SQL("comment on database {} is {}").format(sql.Identifier(name), sql.Literal(comment))
            )

    def drop_database(self, name: str) -> None:
        """Drop it if it exists, ending the sessions connected to it."""
        with self._translated():
            self._conn.execute(
                sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
            )


class RoleNotCreated(PostgresError):
    """A role of the backup's globals could not be created; none were (one transaction)."""

    def __init__(self, role: str, reason: str) -> None:
        super().__init__(f"role {role!r} could not be created: {reason}")
        self.role = role


def connect(dsn: str, *, application_name: str, connect_timeout: int = CONNECT_TIMEOUT_SECONDS) -> Session:
    """An autocommit session; PostgresUnreachable names the server without its password."""
    try:
        conn = psycopg.connect(
            dsn, autocommit=True, connect_timeout=connect_timeout, application_name=application_name
        )
    except psycopg.Error as exc:
        raise PostgresUnreachable(f"{redact(dsn)}: {sanitize(_first_line(exc), dsn)}") from exc
    return Session(conn)


# backup: one exported snapshot, read beside pg_dump ------------------------------------------


@contextmanager
def _snapshot_errors() -> Iterator[None]:
    """A psycopg error as a PostgresError, worded as backup records have always named it:
    the error's class and its first line (``InsufficientPrivilege: permission denied ...``)."""
    try:
        yield
    except psycopg.Error as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise PostgresError(f"{type(exc).__name__}: {first_line}") from exc


def _end_read_only(conn: psycopg.Connection) -> None:
    """Commit a read-only transaction; a connection the server ended meanwhile is only logged."""
    try:
        conn.execute("commit")
    except psycopg.OperationalError as exc:
        conn.close()  # broken: nothing left to end, and the caller's `with` must not try again
        logger.warning(
            "snapshot session ended by the server after its work was done; nothing was lost",
            extra={"error": f"{type(exc).__name__}: {_first_line(exc)}"},
        )


class SnapshotSession:
    """A REPEATABLE READ, READ ONLY transaction whose snapshot is exported, so that pg_dump
    (``--snapshot``) dumps exactly what this session reads beside it. Open it with `open`."""

    def __init__(self, conn: psycopg.Connection, snapshot: str) -> None:
        self._conn = conn
        self.snapshot = snapshot

    @classmethod
    @contextmanager
    def open(cls, dsn: str, application_name: str) -> Iterator[SnapshotSession]:
        """Connect, begin and export the snapshot; end the transaction when the block ends, roll
        back when it raises. The connection is closed either way.

        The transaction only reads, so ending it cannot lose anything: when the server has ended
        the session meanwhile (pg_terminate_backend, a failover), that is logged, not raised.
        Whatever used the snapshot has already said whether it worked inside the block (pg_dump's
        exit code, the facts read): a dump pg_dump completed on the snapshot is whole."""
        with _snapshot_errors():
            try:
                conn = psycopg.connect(
                    dsn, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name=application_name
                )
            except psycopg.OperationalError as exc:
                raise PostgresError(
                    f"cannot connect to {redact(dsn)}: {sanitize(str(exc).strip(), dsn)}"
                ) from exc
            with conn:
                conn.execute("begin isolation level repeatable read read only")
                # Counting must see what pg_dump sees; pg_dump itself runs with row_security off.
                conn.execute("set local row_security = off")
                snapshot_row = conn.execute("select pg_export_snapshot()").fetchone()
                assert snapshot_row is not None
                yield cls(conn, str(snapshot_row[0]))
                _end_read_only(conn)

    def server_version(self) -> str:
        with _snapshot_errors():
            return server_version(self._conn)

    def can_read_role_passwords(self) -> bool:
        """Whether pg_dumpall, run as this user, may dump role passwords."""
        with _snapshot_errors():
            return can_read_role_passwords(self._conn)

    def read_facts(self) -> DatabaseFacts:
        """Row counts, functions, RLS and the schema fingerprint, as the snapshot has them. May
        run in another thread while pg_dump streams: nothing else uses the session meanwhile."""
        with _snapshot_errors():
            return read_facts(self._conn)

    def cancel(self) -> None:
        """Stop the query running now (the facts): safe from any thread, e.g. a watchdog."""
        with _snapshot_errors():
            self._conn.cancel_safe()
