"""Ctrl-C or SIGTERM during `drsentry run backup`: one line saying what was interrupted and
what was cleaned up, exit 128 + the signal, a `failed` record that `status` shows, and nothing
left in the bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cli_process import COMMAND, run_cli

from bucket_state import assert_nothing_at_all, assert_withdrawn_then_purged
from drsentry.core.config import load_config
from drsentry.core.errors import Interrupted
from drsentry.jobs.backup.run import BackupRun
from drsentry.jobs.runtime import build_runtime

pytestmark = pytest.mark.e2e


def drsentry(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=120)


def wait_for_blocked_dump(source_dsn: str, timeout: float = 30.0) -> None:
    """Until the backup's pg_dump waits on the table lock the test holds."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                "select count(*) from pg_stat_activity where application_name = 'drsentry-pg_dump' "
                "and wait_event_type = 'Lock'"
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.1)
    raise AssertionError("pg_dump never reached the locked table")


def assert_nothing_stored(config_path: Path) -> None:
    config = load_config(config_path)
    # The run stopped before any upload completed: not even a withdrawn version is left.
    assert_nothing_at_all(build_runtime(config).clients.s3(), config.storage.bucket)


@pytest.mark.parametrize(
    ("signum", "name", "code"), [(signal.SIGINT, "SIGINT", 130), (signal.SIGTERM, "SIGTERM", 143)]
)
def test_an_interrupted_backup_says_so_records_itself_and_leaves_nothing(
    source_db: str, make_config: Any, signum: int, name: str, code: int
) -> None:
    # Given a backup blocked by a migration's lock, running from the command line
    config, path = make_config(source_db)
    with psycopg.connect(source_db) as migration:
        migration.execute("lock table appointments in access exclusive mode")
        run = subprocess.Popen(
            [*COMMAND, "run", "backup", "--config", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        try:
            wait_for_blocked_dump(source_db)
            # When the operator presses Ctrl-C (or ECS stops the task)
            run.send_signal(signum)
            stdout, stderr = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()

    # Then one line says what was interrupted and what was cleaned up, with 128 + the signal
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    # (the structured log line of the failed backup goes to stderr too, as for every failed run)
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith('{"level"')]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: backup ")
    assert f"of app interrupted by {name}: pg_dump stopped, upload aborted, no object left" in lines[0]
    assert lines[0].endswith("recorded as failed")
    assert stdout == ""
    # and the run is in the catalog as failed, which `status` shows
    listed = drsentry("backups", "list", "--config", str(path), "--json")
    [record] = json.loads(listed.stdout)
    assert record["status"] == "failed"
    assert record["error"].startswith(f"interrupted by {name}")
    status = json.loads(drsentry("status", "--config", str(path), "--json").stdout)
    assert status["targets"][0]["last_backup_status"] == "failed"
    assert status["targets"][0]["last_backup_error"].startswith(f"interrupted by {name}")
    # and nothing is left in the bucket, not even an incomplete upload, and the lock is free
    assert_nothing_stored(path)
    build_runtime(config).catalog.locks.acquire("app", "next-run", ttl_seconds=60)


def test_an_interrupt_after_the_upload_removes_the_stored_objects(
    source_db: str, make_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a backup whose dump, roles object and manifest are stored, interrupted just before
    # its completed record is written (the moment that used to leave an unlisted object)
    config, path = make_config(source_db)
    runtime = build_runtime(config)
    writes: list[str] = []
    put_backup = runtime.catalog.put_backup

    def interrupted_on_completion(record: Any) -> None:
        writes.append(record.status)
        if record.status == "completed":
            raise Interrupted("SIGTERM", 143)
        put_backup(record)

    monkeypatch.setattr(runtime.catalog, "put_backup", interrupted_on_completion)

    # When the run meets the signal
    with pytest.raises(Interrupted) as raised:
        BackupRun(runtime, "app").execute()

    # Then the objects are gone, the failed record says why, and the exit code is SIGTERM's
    assert raised.value.exit_code == 143
    assert "interrupted by SIGTERM: pg_dump stopped, upload aborted, no object left" in str(raised.value)
    assert writes == ["completed", "failed"]
    [record] = runtime.catalog.list_backups("app")
    assert record.status == "failed"
    assert record.error is not None and record.error.startswith("interrupted by SIGTERM")
    # withdrawn at once (dump, roles object, manifest), gone for good after one archive run
    hidden, report = assert_withdrawn_then_purged(build_runtime(config), "app")
    assert record.key in hidden and record.manifest_key in hidden
    assert report.purged == 1
