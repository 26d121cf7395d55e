"""The scratch database's life on the scratch server: leftovers of crashed runs dropped, a fresh
database created and marked with the run that owns it, dropped again whatever happened.

Concurrent runs share the scratch server, so a leftover is only a database nobody is
connected to whose comment (or lack of one) says it is not a run just starting: a run holds a
session on its database from creation to the drop, and `LEFTOVER_GRACE` covers the moment
between CREATE DATABASE and that first session.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from drsentry.adapters import postgres
from drsentry.adapters.secrets import make_conninfo
from drsentry.core.errors import ConnectionLost, DatabaseExists, PostgresError
from drsentry.core.observability import logger
from drsentry.core.records import iso, parse_iso
from drsentry.jobs.verify.rules import CHECK_RESTORE, SCRATCH_PREFIX, StepFailed

APPLICATION_NAME = "drsentry-verify"
# A scratch database this young with nobody connected may be a run between CREATE DATABASE
# and its first session: never a leftover.
LEFTOVER_GRACE = timedelta(minutes=2)

_COMMENT_RE = re.compile(r"^drsentry verify run \S+ started (\S+)$")


def connect(dsn: str, problem: str, check: str = CHECK_RESTORE) -> postgres.Session:
    """A session for verify; a server that cannot be reached fails `check`, saying `problem`."""
    try:
        return postgres.connect(dsn, application_name=APPLICATION_NAME)
    except PostgresError as exc:
        raise StepFailed(check, f"{problem}: {exc}") from exc


class ScratchDatabase:
    """One verification's database on the scratch server, named `name`."""

    def __init__(
        self,
        server_dsn: str,
        name: str,
        run_id: str,
        clock: Callable[[], datetime],
        clean: Callable[[str], str],
    ) -> None:
        self.server_dsn = server_dsn
        self.name = name
        self.dsn = make_conninfo(server_dsn, dbname=name)
        self._run_id = run_id
        self._clock = clock
        self._clean = clean
        self.created = False
        self.dropped = False

    @contextmanager
    def created_for_the_run(self) -> Iterator[ScratchDatabase]:
        """Leftovers dropped and the database created; on the way out, dropped in every outcome."""
        try:
            admin = connect(self.server_dsn, "scratch server unreachable")
            try:
                with admin:
                    self.drop_leftovers(admin)
                    self.create(admin)
            except PostgresError as exc:
                raise StepFailed(CHECK_RESTORE, f"scratch server: {exc}") from exc
            yield self
        finally:
            # Only a database this run created: an existing one may belong to a concurrent run.
            if self.created:
                self.drop()

    def drop_leftovers(self, admin: postgres.Session) -> None:
        """Drop scratch databases that crashed or timed-out runs left behind; never one in use."""
        now = self._clock()
        for database in admin.databases_starting_with(SCRATCH_PREFIX):
            if database.sessions:
                continue
            match = _COMMENT_RE.match(database.comment or "")
            if match and database.name != self.name:
                try:
                    if now - parse_iso(match.group(1)) < LEFTOVER_GRACE:
                        continue
                except ValueError:
                    pass  # an unreadable comment is not ours to trust: treat it as old
            logger.warning("dropping leftover scratch database", extra={"database": database.name})
            try:
                admin.drop_database(database.name)
            except ConnectionLost:
                raise
            except PostgresError as exc:
                # E.g. someone else's database that happens to match: it must not stop this run.
                logger.warning(
                    "cannot drop leftover scratch database",
                    extra={"database": database.name, "error": str(exc)},
                )

    def create(self, admin: postgres.Session) -> None:
        try:
            admin.create_database(self.name)
            self.created = True
        except DatabaseExists as exc:
            raise StepFailed(
                CHECK_RESTORE,
                f"scratch database {self.name} exists and is in use: another verification of this "
                "backup is running",
            ) from exc
        except PostgresError as exc:
            raise StepFailed(CHECK_RESTORE, f"cannot create scratch database {self.name}: {exc}") from exc
        admin.comment_on_database(
            self.name, f"drsentry verify run {self._run_id} started {iso(self._clock())}"
        )

    def drop(self) -> None:
        """Runs whenever this run created the database, whatever happened after; a failure here is
        logged and the next run's leftover cleanup retries."""
        try:
            with postgres.connect(self.server_dsn, application_name=APPLICATION_NAME) as admin:
                admin.drop_database(self.name)
            self.dropped = True
        except PostgresError as exc:
            logger.error(
                "could not drop the scratch database; the next run removes it",
                extra={"database": self.name, "error": self._clean(str(exc))},
            )
