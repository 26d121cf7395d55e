"""Ctrl-C or SIGTERM during `drsentry run verify`, at the restore and at the checks: one line
saying what was interrupted, exit 128 + the signal well within ECS's 30 s, a `failure` record
"interrupted by SIGNAL", no scratch database left, and the verify lock free for the next run.

The signal lands mid-way deterministically: the test waits until the step is seen running on
the scratch server (pg_stat_activity), and the step is made long by the data, not by sleeping
in the test: an index whose expression sleeps per row (built by pg_restore after the data), or
an assertion that sleeps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from cli_process import COMMAND, run_cli

from drsentry.core.config import load_config
from drsentry.core.errors import RunInProgress
from drsentry.jobs.backup.run import BackupRun
from drsentry.jobs.runtime import build_runtime
from drsentry.jobs.verify.rules import SCRATCH_PREFIX

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Stop:
    """A signal and the exit code it must give."""

    signum: int
    name: str
    code: int


STOPS = [Stop(signal.SIGINT, "SIGINT", 130), Stop(signal.SIGTERM, "SIGTERM", 143)]
# ECS sends SIGKILL this long after SIGTERM: the run must be over before.
ECS_STOP_TIMEOUT = 30.0


@pytest.fixture
def slow_restore_source(source_db: str) -> str:
    """A table whose index takes about a second per row to build: pg_restore builds it after
    the data, so the restore is long enough to be interrupted on purpose."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create function public.slow_key(i integer) returns integer language sql immutable as 'select i'"
        )
        conn.execute("create table public.slow_index as select g as id from generate_series(1, 60) g")
        conn.execute("create index slow_index_key on public.slow_index (public.slow_key(id))")
        # Now (the index exists) the function sleeps: only a rebuild, i.e. the restore, pays for it.
        conn.execute(
            "create or replace function public.slow_key(i integer) returns integer language sql immutable "
            "as 'select i from (select pg_catalog.pg_sleep(1)) as pause'"
        )
    return source_db


def _wait_for_query(admin_dsn: str, pattern: str, timeout: float = 60.0) -> None:
    """Until verify's session on the scratch server runs a statement matching `pattern`."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "select count(*) from pg_stat_activity where application_name = 'drsentry-verify' "
                "and state = 'active' and query ilike %s",
                (pattern,),
            ).fetchone()
            if row and row[0]:
                return
            time.sleep(0.1)
    raise AssertionError(f"verify never ran a statement like {pattern!r}")


def _scratch_databases(admin_dsn: str) -> list[str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "select datname from pg_database where datname like %s", (SCRATCH_PREFIX + "%",)
        ).fetchall()
    return [row[0] for row in rows]


@pytest.fixture
def no_scratch_before(admin_dsn: str) -> Iterator[None]:
    # Other tests' scratch databases are dropped by their runs; none may be in the way here.
    assert _scratch_databases(admin_dsn) == []
    yield


@dataclass(frozen=True)
class Interrupted:
    """How an interrupted `drsentry run verify` ended."""

    returncode: int
    stdout: str
    stderr: str
    seconds_to_exit: float  # from the signal


def _interrupt_verify(config_path: Any, admin_dsn: str, pattern: str, stop: Stop) -> Interrupted:
    """`drsentry run verify`, signalled once its scratch session runs `pattern`."""
    run = subprocess.Popen(
        [*COMMAND, "run", "verify", "--config", str(config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        _wait_for_query(admin_dsn, pattern)
        run.send_signal(stop.signum)
        signalled = time.monotonic()
        stdout, stderr = run.communicate(timeout=ECS_STOP_TIMEOUT)
        return Interrupted(run.returncode, stdout, stderr, time.monotonic() - signalled)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def _assert_interrupted_verification(
    config: Any, path: Any, backup_id: str, *, admin_dsn: str, run: Interrupted, stop: Stop
) -> dict[str, Any]:
    returncode, stdout, stderr, name = run.returncode, run.stdout, run.stderr, stop.name
    # One line on stderr says what was interrupted and what was cleaned up, exit 128 + the signal
    assert run.seconds_to_exit < ECS_STOP_TIMEOUT
    assert returncode == stop.code, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith('{"level"')]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: verification of backup {backup_id} of app interrupted by {name}")
    assert lines[0].endswith("scratch database dropped; recorded as failure"), lines[0]
    assert stdout == ""
    # The verification log has the failure, saying it was interrupted
    listed = run_cli("verifications", "list", "--config", str(path), "--json")
    [record] = json.loads(listed.stdout)
    assert record["backup_id"] == backup_id
    assert record["status"] == "failure"
    assert f"interrupted by {name}" in record["error_details"]
    # No scratch database is left on the scratch server
    assert _scratch_databases(admin_dsn) == []
    # The verify lock is free: the next run is not skipped
    locks = build_runtime(config).catalog.locks
    try:
        locks.acquire("app", "next-run", ttl_seconds=60, job="verify")
    except RunInProgress as exc:
        raise AssertionError("the interrupted run left its verify lock behind") from exc
    locks.release("app", "next-run", job="verify")
    return dict(record)


@pytest.mark.usefixtures("no_scratch_before")
@pytest.mark.parametrize("stop", STOPS, ids=lambda stop: stop.name)
def test_a_verification_interrupted_during_the_restore_records_a_failure_and_drops_its_database(
    slow_restore_source: str, admin_dsn: str, make_config: Any, subscribe_notices: Any, stop: Stop
) -> None:
    # Given a backup whose restore takes about a minute (pg_restore building a slow index)
    config, path = make_config(slow_restore_source)
    backup = BackupRun(build_runtime(load_config(path)), "app").execute()
    assert backup.status == "completed", backup.error
    notices = subscribe_notices(build_runtime(config))

    # When the operator presses Ctrl-C (or ECS stops the task) while pg_restore builds it
    run = _interrupt_verify(path, admin_dsn, "create index%slow_key%", stop)

    # Then the run stops well before ECS's SIGKILL and says so, the log has the failure,
    # and nothing is left behind
    record = _assert_interrupted_verification(
        config, path, backup.backup_id, admin_dsn=admin_dsn, run=run, stop=stop
    )
    restore = next(check for check in record["checks"] if check["name"] == "restore")
    assert restore["status"] == "failed"
    assert restore["detail"] == f"interrupted by {stop.name}"
    # and people hear of it: the target's notice is a critical failure saying so
    [notice] = notices()
    assert (notice["source"], notice["severity"], notice["status"]) == ("verify", "critical", "failure")
    assert f"restore: interrupted by {stop.name}" in notice["summary"]


@pytest.mark.usefixtures("no_scratch_before")
@pytest.mark.parametrize("stop", STOPS, ids=lambda stop: stop.name)
def test_a_verification_interrupted_during_its_checks_records_a_failure_and_drops_its_database(
    source_db: str, admin_dsn: str, make_config: Any, stop: Stop
) -> None:
    # Given a restored backup whose checks include an assertion that takes most of a minute
    verify = {
        "scratch_dsn": admin_dsn,
        "critical_tables": ["organizations"],
        "assertions": [{"name": "slow", "sql": "select pg_sleep(50) is not null"}],
    }
    config, path = make_config(source_db, verify=verify)
    backup = BackupRun(build_runtime(load_config(path)), "app").execute()
    assert backup.status == "completed", backup.error

    # When the signal arrives while that assertion runs on the restored database
    run = _interrupt_verify(path, admin_dsn, "%pg_sleep(50)%", stop)

    # Then the restore passed, the assertion failed "interrupted", and nothing is left behind
    record = _assert_interrupted_verification(
        config, path, backup.backup_id, admin_dsn=admin_dsn, run=run, stop=stop
    )
    checks = {check["name"]: check for check in record["checks"]}
    assert checks["restore"]["status"] == "passed"
    assert checks["assertion: slow"]["status"] == "failed"
    assert checks["assertion: slow"]["detail"] == f"interrupted by {stop.name}"
