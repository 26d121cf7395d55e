"""`drsentry check` and `drsentry run verify` with no scratch server configured, as a user's shell
runs them: the throwaway server is reported by `check`, and SIGTERM in the middle of the
restore leaves no PostgreSQL process and no directory behind."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from cli_process import COMMAND, run_cli

pytestmark = pytest.mark.e2e

SAMPLE_CHECKS = {"critical_tables": ["organizations", "profiles", "appointments"], "min_size": "1MB"}


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """The CLI's TMPDIR, reachable by the unprivileged user the server runs as under root."""
    root = Path(tempfile.mkdtemp(prefix="drsentry-e2e-scratch-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def servers_under(directory: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(directory) in part for part in process.info["cmdline"] or []):
            found.append(process)
    return found


def running_pg_restore(cli: subprocess.Popen[str]) -> bool:
    """The restore's pg_restore (not the table-of-contents read before it) is running."""
    try:
        children = psutil.Process(cli.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            if any(part.startswith("--dbname=") for part in child.cmdline()) and child.status() not in (
                psutil.STATUS_ZOMBIE,
                psutil.STATUS_DEAD,
            ):
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def test_check_reports_the_throwaway_server_it_would_start(
    source_db: str, make_config: Any, scratch_root: Path
) -> None:
    _, path = make_config(source_db, verify=SAMPLE_CHECKS)

    run = run_cli("check", "--config", str(path), env={"TMPDIR": str(scratch_root)})

    lines = run.stdout.splitlines()
    assert any(
        line.startswith("PASS") and "no scratch server named: verify starts a throwaway PostgreSQL" in line
        for line in lines
    ), run.stdout
    assert not [line for line in lines if line.startswith("FAIL") and "scratch" in line]


def test_sigterm_in_the_middle_of_the_restore_leaves_no_server_and_no_directory(
    source_db: str, make_config: Any, scratch_root: Path
) -> None:
    # Given a backup large enough that its restore takes a few seconds
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create table payload as select g, repeat(md5(g::text), 8) as filler"
            " from generate_series(1, 400000) g"
        )
        conn.execute("create index payload_filler on payload (filler)")
    _, path = make_config(source_db, verify=SAMPLE_CHECKS)
    backup = run_cli("run", "backup", "--config", str(path))
    assert backup.returncode == 0, backup.stderr

    # When `drsentry run verify` gets SIGTERM while pg_restore is loading the throwaway server
    verify = subprocess.Popen(
        [*COMMAND, "run", "verify", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TMPDIR": str(scratch_root)},
    )
    try:
        deadline = time.monotonic() + 60
        while not running_pg_restore(verify) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert running_pg_restore(verify), "pg_restore never started"
        assert servers_under(scratch_root), "no throwaway server was running"
        verify.send_signal(signal.SIGTERM)
        _, stderr = verify.communicate(timeout=60)
    finally:
        if verify.poll() is None:
            verify.kill()

    # Then the run ends as SIGTERM says, without a traceback, and nothing of the server is left
    assert verify.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert servers_under(scratch_root) == []
    assert list(scratch_root.iterdir()) == []
