"""`drsentry run backup` over several targets: they run at the same time, at most --max-parallel
at once; one failing target does not stop the others; Ctrl-C or SIGTERM stops every one of them
and each records itself as a lone interrupted run does."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cli_process import COMMAND, run_cli

from bucket_state import assert_nothing_at_all
from drsentry.core.config import load_config
from drsentry.jobs.runtime import build_runtime
from drsentry.local.sample import create_sample_database, drop_database

pytestmark = pytest.mark.e2e
TARGETS = ("app", "billing", "crm")


@pytest.fixture
def three_targets(admin_dsn: str, make_config: Any) -> Iterator[tuple[Path, dict[str, str]]]:
    """A config of three targets, each its own sample database; (path, target name -> DSN)."""
    names = {target: f"{target}_{secrets.token_hex(4)}" for target in TARGETS}
    dsns = {target: create_sample_database(admin_dsn, name) for target, name in names.items()}
    _, path = make_config(dsns["app"])
    raw = yaml.safe_load(path.read_text())
    first = raw["targets"][0]
    raw["targets"] = [{**first, "name": target, "dsn": dsns[target]} for target in TARGETS]
    path.write_text(yaml.safe_dump(raw))
    yield path, dsns
    for name in names.values():
        drop_database(admin_dsn, name)


def blocked_dumps(admin_dsn: str) -> int:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where application_name = 'drsentry-pg_dump' "
            "and wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def wait_for_blocked_dumps(admin_dsn: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if blocked_dumps(admin_dsn) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"never saw {count} pg_dumps waiting at once (saw {blocked_dumps(admin_dsn)})")


def start_backup(path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*COMMAND, "run", "backup", "--config", str(path), "--json", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )


def lock_every_source(stack: ExitStack, dsns: dict[str, str]) -> None:
    """A migration's lock on each source: each target's pg_dump waits until it goes."""
    for dsn in dsns.values():
        migration = stack.enter_context(psycopg.connect(dsn))
        migration.execute("lock table appointments in access exclusive mode")


def test_three_targets_back_up_at_the_same_time(admin_dsn: str, three_targets: Any) -> None:
    path, dsns = three_targets
    # Given three targets whose pg_dumps each wait on a migration's lock
    with ExitStack() as locks:
        lock_every_source(locks, dsns)
        run = start_backup(path)
        try:
            # When the backup runs over all targets, Then all three dumps are under way at once
            wait_for_blocked_dumps(admin_dsn, 3)
        finally:
            if run.poll() is not None:
                run.kill()
    # and once the locks go, every target completes, reported in the config's order
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    result = json.loads(stdout)
    assert [backup["target"] for backup in result["backups"]] == list(TARGETS)
    assert {backup["status"] for backup in result["backups"]} == {"completed"}
    assert [outcome["outcome"] for outcome in result["outcomes"]] == ["ran", "ran", "ran"]


def test_max_parallel_one_backs_up_one_target_at_a_time(admin_dsn: str, three_targets: Any) -> None:
    path, dsns = three_targets
    # Given the same three blocked targets, run with --max-parallel 1
    with ExitStack() as locks:
        lock_every_source(locks, dsns)
        run = start_backup(path, "--max-parallel", "1")
        try:
            wait_for_blocked_dumps(admin_dsn, 1)
            time.sleep(2)
            # Then only one dump is under way: the others have not started
            assert blocked_dumps(admin_dsn) == 1
        finally:
            if run.poll() is not None:
                run.kill()
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr
    assert [backup["status"] for backup in json.loads(stdout)["backups"]] == ["completed"] * 3


def test_a_failing_target_does_not_stop_the_others(admin_dsn: str, three_targets: Any) -> None:
    path, dsns = three_targets
    # Given three targets, the second of which points at a database that does not exist
    raw = yaml.safe_load(path.read_text())
    raw["targets"][1]["dsn"] = dsns["billing"].rsplit("/", 1)[0] + "/no_such_database"
    path.write_text(yaml.safe_dump(raw))

    # When all three are backed up at once
    run = run_cli("run", "backup", "--config", str(path), "--json", timeout=180)

    # Then the run says it failed, and the other two completed
    assert run.returncode == 1, run.stderr
    statuses = {backup["target"]: backup["status"] for backup in json.loads(run.stdout)["backups"]}
    assert statuses == {"app": "completed", "billing": "failed", "crm": "completed"}


@pytest.mark.parametrize(
    ("signum", "name", "code"), [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "SIGINT", 130)]
)
def test_a_signal_stops_every_running_target_and_each_records_itself(
    admin_dsn: str, three_targets: Any, signum: int, name: str, code: int
) -> None:
    path, dsns = three_targets
    # Given three targets backing up at once, each dump blocked by a migration's lock
    with ExitStack() as locks:
        lock_every_source(locks, dsns)
        run = start_backup(path)
        try:
            wait_for_blocked_dumps(admin_dsn, 3)
            # When the operator presses Ctrl-C (or ECS stops the task): the signal reaches the CLI only
            run.send_signal(signum)
            stdout, stderr = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()

    # Then one line names every interrupted target, with 128 + the signal
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith('{"level"')]
    assert len(lines) == 1, stderr
    for target in TARGETS:
        assert (
            f"of {target} interrupted by {name}: pg_dump stopped, upload aborted, no object left" in lines[0]
        )
    # and each target has a failed record, nothing is stored and no lock is left
    config = load_config(path)
    runtime = build_runtime(config)
    for target in TARGETS:
        [record] = runtime.catalog.list_backups(target)
        assert record.status == "failed"
        assert record.error is not None and record.error.startswith(f"interrupted by {name}")
        runtime.catalog.locks.acquire(target, "next-run", ttl_seconds=60)
    # (no upload completed before the signal: not even a withdrawn version is left)
    assert_nothing_at_all(runtime.clients.s3(), config.storage.bucket)
