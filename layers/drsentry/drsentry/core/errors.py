"""Domain exceptions. Every message is one line an operator can act on."""

from __future__ import annotations


class DrsentryError(Exception):
    """Base of every error drsentry raises on purpose."""


class BadInput(DrsentryError):
    """Bad usage, configuration or input: the CLI exits 2."""


class ConfigError(BadInput):
    """drsentry.yaml is missing, unreadable or invalid."""


class UnknownTarget(BadInput):
    """A target name that the configuration does not define."""


class BackupNotFound(BadInput):
    """A backup id that is malformed or not in the catalog."""


class CredentialsError(BadInput):
    """A secret that cannot be read or lacks the fields drsentry needs."""


class PgToolsError(DrsentryError):
    """pg_dump / pg_restore missing, too old, or failing."""


class PostgresError(DrsentryError):
    """PostgreSQL refused or failed a statement; the message is the server's first line."""


class PostgresUnreachable(PostgresError):
    """No session could be opened: the server is down, unreachable, or refused the login."""


class ConnectionLost(PostgresError):
    """The session broke during a statement: nothing more can run on it."""


class StatementTimedOut(PostgresError):
    """statement_timeout cancelled the statement; the session itself is still usable."""


class DatabaseExists(PostgresError):
    """CREATE DATABASE found a database of that name already there."""


class BackupFailed(DrsentryError):
    """The backup ran and failed; the catalog holds a `failed` record."""


class CatalogWriteFailed(BackupFailed):
    """The dump is stored but its catalog record could not be written (an orphaned object)."""


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) or SIGTERM (ECS stopping a task) arrived. A KeyboardInterrupt, so every
    `except BaseException` cleanup on the way up runs (pg_dump stopped, upload aborted); a run
    that meets it records itself and re-raises it with what it cleaned up. The CLI exits with
    `exit_code` (128 + the signal number: 130, 143) and prints `str()` as its one line."""

    def __init__(self, signal_name: str = "SIGINT", exit_code: int = 130, detail: str = "") -> None:
        super().__init__(detail or f"interrupted by {signal_name}")
        self.signal_name = signal_name
        self.exit_code = exit_code

    @classmethod
    def of(cls, exc: KeyboardInterrupt, detail: str) -> Interrupted:
        """The same signal and exit code as `exc` (a bare KeyboardInterrupt is SIGINT), with `detail`."""
        if isinstance(exc, Interrupted):
            return cls(exc.signal_name, exc.exit_code, detail)
        return cls(detail=detail)


class RunInProgress(DrsentryError):
    """Another run of the same job holds the target's lock (or is processing the same event)."""

    @classmethod
    def lock_held(cls, job: str, target: str) -> RunInProgress:
        return cls(
            f"another {job} run of target {target!r} is running (lock held); not starting a second one"
        )


class StorageError(DrsentryError):
    """Object storage refused or failed an operation."""


class BucketNotFound(StorageError):
    """A bucket the configuration names does not exist."""


class ObjectArchived(StorageError):
    """The object is in an archive storage class (GLACIER, DEEP_ARCHIVE) and not restored: its
    bytes cannot be read until S3 has restored it."""


class RestoreInProgress(StorageError):
    """A restore of an archived object was already requested and S3 is still working on it."""


class DeleteRefused(StorageError):
    """S3 refused to delete a version: Object Lock retention or a legal hold protects it."""


class NotificationError(DrsentryError):
    """SNS refused or failed a publish or a lookup of the alerts topic."""


class CatalogError(DrsentryError):
    """The DynamoDB catalog refused or failed an operation."""


class SchedulerError(DrsentryError):
    """The stack's schedule group could not be read or changed (EventBridge Scheduler refused)."""


class HandOffFailed(DrsentryError):
    """Step Functions refused or failed to start the Fargate run of a target."""
