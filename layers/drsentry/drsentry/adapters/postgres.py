"""PostgreSQL sessions as the jobs hold them: psycopg stays behind this module, and every
error it raises leaves as a `PostgresError` (drsentry.core.errors) with a one-line message.
The queries that read what a database holds are in `drsentry.adapters.pgmeta`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from drsentry.adapters.pgmeta import DatabaseFacts, read_facts, server_version
from drsentry.adapters.secrets import redact, sanitize
from drsentry.core.errors import PostgresError

# backup: one exported snapshot, read beside pg_dump ------------------------------------------

SNAPSHOT_CONNECT_TIMEOUT_SECONDS = 15


@contextmanager
def _snapshot_errors() -> Iterator[None]:
    """A psycopg error as a PostgresError, worded as backup records have always named it:
    the error's class and its first line (``InsufficientPrivilege: permission denied ...``)."""
    try:
        yield
    except psycopg.Error as exc:
        first_line = (str(exc).strip().splitlines() or [""])[0]
        raise PostgresError(f"{type(exc).__name__}: {first_line}") from exc


class SnapshotSession:
    """A REPEATABLE READ, READ ONLY transaction whose snapshot is exported, so that pg_dump
    (``--snapshot``) dumps exactly what this session reads beside it. Open it with `open`."""

    def __init__(self, conn: psycopg.Connection, snapshot: str) -> None:
        self._conn = conn
        self.snapshot = snapshot

    @classmethod
    @contextmanager
    def open(cls, dsn: str, application_name: str) -> Iterator[SnapshotSession]:
        """Connect, begin and export the snapshot; commit when the block ends, roll back when it
        raises. The connection is closed either way."""
        with _snapshot_errors():
            try:
                conn = psycopg.connect(
                    dsn, connect_timeout=SNAPSHOT_CONNECT_TIMEOUT_SECONDS, application_name=application_name
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
                conn.execute("commit")

    def server_version(self) -> str:
        with _snapshot_errors():
            return server_version(self._conn)

    def read_facts(self) -> DatabaseFacts:
        """Row counts, functions, RLS and the schema fingerprint, as the snapshot has them. May
        run in another thread while pg_dump streams: nothing else uses the session meanwhile."""
        with _snapshot_errors():
            return read_facts(self._conn)

    def cancel(self) -> None:
        """Stop the query running now (the facts): safe from any thread, e.g. a watchdog."""
        with _snapshot_errors():
            self._conn.cancel_safe()
