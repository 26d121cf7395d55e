"""The roles object: `pg_dumpall --globals-only` of the dump's server, stored beside the dump.

pg_dump never contains roles, so a dump alone cannot be restored into a blank server: every
owner, grant and policy naming a role fails. The globals (roles, memberships, role settings,
tablespaces) are a few kilobytes of SQL, captured in memory before the dump starts (a failed
pg_dumpall fails the backup before any object exists) and stored once the dump completed.

Passwords are only in pg_authid, which only superusers (or users granted it) may read; RDS and
Aurora master users are not superusers. Where the backup's user cannot read it, the roles are
dumped with ``--no-role-passwords`` and the record says so (`role_passwords`): no setting.

pg_dumpall 18 wraps its output in psql meta-commands (``\\restrict KEY`` / ``\\unrestrict KEY``);
the text is stored as pg_dumpall wrote it, and the restore reads it statement by statement.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from drsentry.adapters.buckets import Bucket, StoredObject
from drsentry.adapters.pgtools import PgTool, error_lines, pg_environment
from drsentry.adapters.secrets import sanitize
from drsentry.core.errors import BackupFailed
from drsentry.jobs.backup.rules import tool_failure

# The globals of a cluster with thousands of roles take well under a second; a pg_dumpall
# that hangs (a server that stopped answering) must not take the run's whole deadline.
GLOBALS_TIMEOUT_SECONDS = 120.0
CONTENT_TYPE = "application/sql; charset=utf-8"


@dataclass(frozen=True)
class CapturedGlobals:
    sql: bytes
    role_passwords: bool
    pg_dumpall: PgTool


def capture_globals(
    pg_dumpall: PgTool, dsn: str, *, role_passwords: bool, time_left: float | None
) -> CapturedGlobals:
    """Run `pg_dumpall --globals-only` against the server of `dsn`, within `time_left` seconds
    (None: no deadline); BackupFailed naming the problem when it fails (the DSN's password
    never in the message)."""
    dsn_without_password, env = pg_environment(dsn, "drsentry-pg_dumpall")
    command = [
        str(pg_dumpall.path),
        "--globals-only",
        "--no-password",
        f"--dbname={dsn_without_password}",
    ]
    if not role_passwords:
        command.append("--no-role-passwords")
    timeout = GLOBALS_TIMEOUT_SECONDS
    if time_left is not None:
        timeout = max(min(GLOBALS_TIMEOUT_SECONDS, time_left), 1.0)
    try:
        finished = subprocess.run(command, capture_output=True, env=env, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BackupFailed(f"pg_dumpall --globals-only did not finish within {timeout:.0f}s") from exc
    except OSError as exc:
        raise BackupFailed(f"pg_dumpall could not be started ({pg_dumpall.path}): {exc}") from exc
    stderr = finished.stderr.decode("utf-8", errors="replace").strip()
    errors = error_lines(stderr)
    if finished.returncode != 0 or errors:
        failure = tool_failure(
            "pg_dumpall --globals-only", finished.returncode, errors or stderr.splitlines()
        )
        raise BackupFailed(sanitize(failure, dsn))
    if not finished.stdout.strip():
        raise BackupFailed("pg_dumpall --globals-only produced no output")
    return CapturedGlobals(sql=finished.stdout, role_passwords=role_passwords, pg_dumpall=pg_dumpall)


def store_globals(
    bucket: Bucket, key: str, captured: CapturedGlobals, *, backup_id: str, target: str
) -> StoredObject:
    """The globals object at `key`, encrypted like the dump, its SHA-256 and size as tags."""
    return bucket.put_bytes(
        key,
        captured.sql,
        content_type=CONTENT_TYPE,
        metadata={
            "backup-id": backup_id,
            "target": target,
            "role-passwords": "true" if captured.role_passwords else "false",
        },
    )
