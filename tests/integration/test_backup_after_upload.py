"""After the dump's upload completes, either the record says `completed` or the objects are gone:
never a stored, tagged dump beside a `failed` record."""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
import pytest

from bucket_state import assert_withdrawn_then_purged
from drsentry.core.errors import Interrupted, PostgresError
from drsentry.core.events import ScheduledEvent
from drsentry.jobs.backup import dump as backup_dump
from drsentry.jobs.backup.job import backup_target, run_scheduled_backup
from drsentry.jobs.backup.run import BackupRun
from drsentry.jobs.runtime import build_runtime

pytestmark = pytest.mark.integration


def _terminate_backup_sessions(source_dsn: str) -> int:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) filter (where pg_terminate_backend(pid)) from pg_stat_activity "
            "where application_name = 'drsentry-backup'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_snapshot_session_terminated_as_pg_dump_exits_still_completes_the_backup(
    source_db: str, make_config: Any, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a server that terminates the backup's snapshot session the moment pg_dump has exited
    # and the dump's upload has completed (an administrator's pg_terminate_backend, a failover)
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    terminated: list[int] = []
    stream = backup_dump.DatabaseDump._stream

    def stream_then_terminate(self: Any, *args: Any, **kwargs: Any) -> Any:
        stored = stream(self, *args, **kwargs)
        terminated.append(_terminate_backup_sessions(source_db))
        return stored

    monkeypatch.setattr(backup_dump.DatabaseDump, "_stream", stream_then_terminate)

    # When the backup runs
    record = backup_target(runtime, "app")

    # Then the session was terminated, and the backup is completed all the same: pg_dump exited 0
    # on its snapshot, so the dump is whole; the stored object is the one the record describes
    assert terminated == [1]
    assert record.status == "completed", record.error
    body = clients.s3().get_object(Bucket=record.bucket, Key=record.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record.sha256
    [listed] = runtime.catalog.list_backups("app")
    assert listed.status == "completed"


def test_a_failure_after_the_upload_removes_the_stored_dump_before_recording_failed(
    source_db: str, make_config: Any, clients: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a dump whose upload completes, and then the dump step fails (closing the snapshot
    # session on a server that went away in a way no read-only commit can excuse)
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    run = backup_dump.DatabaseDump.run
    uploaded: list[str] = []

    def run_then_fail(self: Any, dsn: str) -> Any:
        outcome = run(self, dsn)
        uploaded.append(outcome.stored.key)
        raise PostgresError("server closed the connection while the snapshot session ended")

    monkeypatch.setattr(backup_dump.DatabaseDump, "run", run_then_fail)

    # When the backup runs
    record = backup_target(runtime, "app")

    # Then the dump had been stored, the record is failed with the reason, and no object is left
    assert len(uploaded) == 1
    assert record.status == "failed"
    assert record.error is not None and "snapshot session ended" in record.error
    assert "stored objects withdrawn" in record.error
    hidden, report = assert_withdrawn_then_purged(runtime, "app")
    assert hidden == uploaded
    assert report.purged == 1


def test_a_retry_of_an_interrupted_runs_event_runs_again(
    source_db: str, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a scheduled backup whose run was stopped by SIGTERM (ECS stopping the task)
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    event = ScheduledEvent.now(None, region=config.storage.region)
    execute = BackupRun.execute

    def stopped(self: BackupRun) -> Any:
        raise Interrupted("SIGTERM", 143)

    monkeypatch.setattr(BackupRun, "execute", stopped)
    with pytest.raises(Interrupted):
        run_scheduled_backup(runtime, event)

    # When the same event is delivered again (a retry of the stopped task)
    monkeypatch.setattr(BackupRun, "execute", execute)
    result = run_scheduled_backup(runtime, event)

    # Then it runs: the stopped run's event was not left "in progress" to refuse it for days
    assert [outcome.outcome for outcome in result.outcomes] == ["ran"]
    [record] = result.records
    assert record.status == "completed", record.error
