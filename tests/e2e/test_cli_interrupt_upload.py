"""Ctrl-C or SIGTERM while `drsentry run backup` streams: pg_dump running and the multipart
upload open. The run stops pg_dump, aborts the upload (no part is left: list_multipart_uploads
is empty), stores nothing, records `failed` "interrupted by SIGNAL", frees its lock and exits
128 + the signal well within ECS's 30 s.

The signal lands mid-stream deterministically: S3 is made slow (each part upload delayed by a
fault proxy between the CLI and moto), so pg_dump waits on a full pipe while the test watches
the upload's parts arrive."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from cli_process import COMMAND, run_cli

from bucket_state import assert_nothing_at_all
from drsentry.core.errors import RunInProgress
from drsentry.jobs.runtime import build_runtime
from integration.fault_proxy import FaultProxy, Rule, s3_upload_part

pytestmark = pytest.mark.e2e

# Each part upload waits this long in the proxy: a 6 MiB part every second or so per slot.
PART_DELAY_SECONDS = 1.5
ECS_STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class Stop:
    signum: int
    name: str
    code: int


STOPS = [Stop(signal.SIGINT, "SIGINT", 130), Stop(signal.SIGTERM, "SIGTERM", 143)]


@pytest.fixture
def big_source(source_db: str) -> str:
    """Enough data for several 6 MiB upload parts after compression."""
    with psycopg.connect(source_db, autocommit=True) as conn:
        conn.execute(
            "create table payload as select g as id, md5(random()::text) || md5(random()::text) as a"
            " from generate_series(1, 600000) g"
        )
    return source_db


@pytest.fixture
def slow_s3(aws_endpoint: str) -> Iterator[FaultProxy]:
    with FaultProxy(aws_endpoint) as proxy:
        proxy.add(Rule(matches=s3_upload_part, action="delay", delay_seconds=PART_DELAY_SECONDS))
        yield proxy


def _parts_uploaded(s3: Any, bucket: str) -> int | None:
    """Parts of the bucket's open multipart upload; None while there is none."""
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    if not uploads:
        return None
    upload = uploads[0]
    return len(s3.list_parts(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]).get("Parts", []))


def _pg_dump_sessions(source_dsn: str) -> int:
    with psycopg.connect(source_dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) from pg_stat_activity where application_name = 'drsentry-pg_dump'"
        ).fetchone()
    return int(row[0]) if row else 0


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never saw {what}")


POINTS = {
    # the upload is open and pg_dump is streaming into it; no part has arrived yet
    "upload-open": lambda parts, dumping: parts is not None and dumping > 0,
    # at least one part is stored in S3 and more are on their way (pg_dump may have finished)
    "parts-stored": lambda parts, _dumping: parts is not None and parts >= 1,
}


@pytest.mark.parametrize("point", sorted(POINTS))
@pytest.mark.parametrize("stop", STOPS, ids=lambda stop: stop.name)
def test_a_backup_interrupted_mid_stream_aborts_the_upload_and_records_itself(
    big_source: str, make_config: Any, slow_s3: FaultProxy, stop: Stop, point: str
) -> None:
    # Given a backup streaming a dump of several parts to a slow S3, from the command line
    config, path = make_config(big_source)
    s3 = build_runtime(config).clients.s3()
    bucket = config.storage.bucket
    run = subprocess.Popen(
        [*COMMAND, "run", "backup", "--config", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AWS_ENDPOINT_URL": slow_s3.url},
    )
    try:
        reached = POINTS[point]
        _wait_until(lambda: reached(_parts_uploaded(s3, bucket), _pg_dump_sessions(big_source)), point)
        # When the operator presses Ctrl-C (or ECS stops the task) there
        run.send_signal(stop.signum)
        signalled = time.monotonic()
        stdout, stderr = run.communicate(timeout=ECS_STOP_TIMEOUT)
        seconds_to_exit = time.monotonic() - signalled
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    # Then it is over well before ECS's SIGKILL, with 128 + the signal and one line saying so
    assert seconds_to_exit < ECS_STOP_TIMEOUT
    assert run.returncode == stop.code, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith('{"level"')]
    assert len(lines) == 1, stderr
    assert f"interrupted by {stop.name}: pg_dump stopped, upload aborted, no object left" in lines[0]
    assert stdout == ""
    # and pg_dump is gone from the source, no object or part is left, the record says why
    _wait_until(lambda: _pg_dump_sessions(big_source) == 0, "pg_dump's session end", timeout=10)
    # (the upload never completed: not even a withdrawn version is left)
    assert_nothing_at_all(s3, bucket)
    [record] = json.loads(run_cli("backups", "list", "--config", str(path), "--json").stdout)
    assert record["status"] == "failed"
    assert record["error"].startswith(f"interrupted by {stop.name}")
    # and the lock is free: the next run is not skipped
    locks = build_runtime(config).catalog.locks
    try:
        locks.acquire("app", "next-run", ttl_seconds=60)
    except RunInProgress as exc:
        raise AssertionError("the interrupted backup left its lock behind") from exc
