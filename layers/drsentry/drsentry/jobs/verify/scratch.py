"""The scratch server a verification restores into, and the scratch database's life on it:
leftovers of crashed runs dropped, a fresh database created and marked with the run that owns
it, dropped again whatever happened.

The server is either the standing one the target names (`scratch_dsn(_secret)`) or, by default,
a blank throwaway server started for this run and destroyed with its directory after it
(adapters/throwaway_server.py); before starting one, the binaries' major version and the
scratch space are checked against the backup (server_rules.py).

Concurrent runs share the scratch server, so a leftover is only a database nobody is
connected to whose comment (or lack of one) says it is not a run just starting: a run holds a
session on its database from creation to the drop, and `LEFTOVER_GRACE` covers the moment
between CREATE DATABASE and that first session.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from drsentry.adapters import postgres
from drsentry.adapters.archive_head import (
    SCHEMA_CHUNK_BYTES,
    SchemaUnreadable,
    listed_extensions,
    read_listing,
)
from drsentry.adapters.buckets import ObjectStore
from drsentry.adapters.pgtools import PgTool
from drsentry.adapters.secrets import make_conninfo
from drsentry.adapters.throwaway_server import (
    SERVER_OVERHEAD_BYTES,
    ServerNotStarted,
    find_server_binaries,
    free_bytes,
    throwaway_server,
)
from drsentry.core.errors import ConnectionLost, DatabaseExists, PostgresError, StorageError
from drsentry.core.observability import logger
from drsentry.core.records import BackupRecord, VerifyServer, iso, parse_iso
from drsentry.jobs.verify.rules import CHECK_RESTORE, SCRATCH_PREFIX, StepFailed
from drsentry.jobs.verify.server_rules import (
    extensions_problem,
    ran_out_of_space,
    space_message,
    space_problem,
    version_problem,
)

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


@dataclass
class ScratchServer:
    """The server this verification restores into, as its record reports it."""

    dsn: str
    record: VerifyServer
    # pg_restore's session settings on this server (a throwaway one's own maintenance_work_mem).
    session_settings: dict[str, str] = field(default_factory=dict)
    # pg_restore's options for this server beyond verify's own (a throwaway one: one transaction).
    restore_options: tuple[str, ...] = ()
    # Scratch space before the restore, and what the backup was estimated to need (throwaway only).
    free_bytes: int | None = None
    needed_bytes: int | None = None
    # The server's own log (a throwaway server's; a standing server's is not ours to read): a
    # full disk can crash the server, and then only its log says why.
    server_log: Callable[[], str] = lambda: ""

    @property
    def throwaway(self) -> bool:
        return self.record.kind == "throwaway"

    def reported(self, database: ScratchDatabase | None) -> VerifyServer:
        """The record's `server`: a standing server's version as its scratch database read it."""
        if self.record.version is None and database is not None and database.server_version:
            return self.record.model_copy(update={"version": database.server_version})
        return self.record

    def explain_restore_error(self, restore_error: str) -> str:
        """A throwaway server's "could not extend file ... No space left on device" (or a crash
        on a full WAL disk, said only in its log) as what to change; other errors as they are."""
        if self.throwaway and (ran_out_of_space(restore_error) or ran_out_of_space(self.server_log())):
            return space_message(self.needed_bytes, self.free_bytes or 0)
        return restore_error


def require_extensions(
    server: ScratchServer, store: ObjectStore, backup: BackupRecord, pg_restore: PgTool
) -> None:
    """The extensions the archive's table of contents creates, against those the server has: a
    missing one fails before the restore, in one line. A head that cannot be read is left to the
    restore, which reads the whole object and names the real cause."""
    chunks = store.iter_chunks(backup.bucket, backup.key, SCHEMA_CHUNK_BYTES)
    try:
        needed = listed_extensions(read_listing(chunks, pg_restore))
    except (SchemaUnreadable, StorageError) as exc:
        logger.warning(
            "table of contents unreadable before the restore",
            extra={"backup_id": backup.backup_id, "error": str(exc)},
        )
        return
    if not needed:
        return
    admin = connect(server.dsn, "throwaway verify server unreachable")
    with admin:
        try:
            available = admin.available_extensions()
        except PostgresError as exc:
            raise StepFailed(CHECK_RESTORE, f"throwaway verify server: {exc}") from exc
    problem = extensions_problem(needed, available, server.record.version or "?")
    if problem:
        raise StepFailed(CHECK_RESTORE, problem)


def scratch_server(
    scratch_dsn: str | None, backup: BackupRecord, pg_bin_dir: str | None
) -> AbstractContextManager[ScratchServer]:
    """The target's standing server when it names one, else a throwaway server for this run."""
    if scratch_dsn is not None:
        return standing_server(scratch_dsn)
    return throwaway_scratch_server(backup, pg_bin_dir)


@contextmanager
def standing_server(dsn: str) -> Iterator[ScratchServer]:
    """The target's own scratch server: nothing to start or stop."""
    yield ScratchServer(dsn=dsn, record=VerifyServer(kind="standing"))


@contextmanager
def throwaway_scratch_server(backup: BackupRecord, pg_bin_dir: str | None) -> Iterator[ScratchServer]:
    """A blank server for this run, refused before it starts when it could not restore the backup
    (too old a major, too little space); destroyed with its directory whatever happens inside."""
    try:
        binaries = find_server_binaries(pg_bin_dir)
    except ServerNotStarted as exc:
        raise StepFailed(CHECK_RESTORE, str(exc)) from exc
    problem = version_problem(backup.pg_server_version, binaries.version)
    free = free_bytes()
    problem = problem or space_problem(backup.database_size_bytes, SERVER_OVERHEAD_BYTES, free)
    if problem:
        raise StepFailed(CHECK_RESTORE, problem)
    with ExitStack() as stack:
        try:
            running = stack.enter_context(throwaway_server(binaries))
        except ServerNotStarted as exc:
            raise StepFailed(CHECK_RESTORE, f"throwaway verify server: {exc}") from exc
        logger.info(
            "throwaway verify server started",
            extra={"version": running.version, "start_seconds": running.start_seconds},
        )
        yield ScratchServer(
            dsn=running.dsn(),
            record=VerifyServer(
                kind="throwaway",
                version=running.version,
                start_seconds=running.start_seconds,
                settings=dict(running.settings),
            ),
            session_settings={"maintenance_work_mem": running.settings["maintenance_work_mem"]},
            # Tables created and loaded in one transaction skip WAL under wal_level=minimal; a
            # failed restore rolls back, and the server is thrown away either way.
            restore_options=("--single-transaction",),
            free_bytes=free,
            server_log=running.log_text,
            needed_bytes=(
                None
                if backup.database_size_bytes is None
                else backup.database_size_bytes + SERVER_OVERHEAD_BYTES
            ),
        )


class ScratchDatabase:
    """One verification's database on the scratch server, named `name`."""

    def __init__(
        self,
        server_dsn: str,
        name: str,
        run_id: str,
        clock: Callable[[], datetime],
        clean: Callable[[str], str],
        *,
        drop_after: bool = True,
    ) -> None:
        self.server_dsn = server_dsn
        # False on a throwaway server: its whole directory goes with it, and the DROP DATABASE
        # (0.07-0.09 s on the benchmark database) would only delay that.
        self.drop_after = drop_after
        self.name = name
        self.dsn = make_conninfo(server_dsn, dbname=name)
        self._run_id = run_id
        self._clock = clock
        self._clean = clean
        self.created = False
        self.server_version: str | None = None
        self.dropped = False

    @contextmanager
    def created_for_the_run(self) -> Iterator[ScratchDatabase]:
        """Leftovers dropped and the database created; on the way out, dropped in every outcome."""
        try:
            admin = connect(self.server_dsn, "scratch server unreachable")
            try:
                with admin:
                    self.server_version = admin.server_version()
                    self.drop_leftovers(admin)
                    self.create(admin)
            except PostgresError as exc:
                raise StepFailed(CHECK_RESTORE, f"scratch server: {exc}") from exc
            yield self
        finally:
            # Only a database this run created: an existing one may belong to a concurrent run.
            if self.created and self.drop_after:
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
