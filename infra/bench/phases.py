"""Where one backup's or verification's wall time goes: the CLI's code path in-process, with timers.

Not a contender (the timers cost a little): run once after the timed rounds to explain
them. The same code path as ``drsentry run backup|verify`` (``run_scheduled_*`` with a
scheduled event); each step's time is wall time on the main thread, except
``upload_part`` (summed over the upload threads, which run beside the rest). A missing
attribute (the code moved on) is skipped, not an error.

- backup: ``stream other`` is the part of the streaming loop spent outside zstd's
  ``write``, mostly waiting for pg_dump's output;
- verify: ``download`` is waiting for the next chunk from S3, ``feed pg_restore`` is
  writing to its stdin (blocked while it is busy), ``pg_restore after the last byte`` is
  what it does once the archive is read (index builds, constraints).

    DRSENTRY_CONFIG=... python infra/bench/phases.py backup|verify --target NAME
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil

TIMINGS: dict[str, list[float]] = {}  # step: [seconds, calls]


def _add(label: str, seconds: float) -> None:
    entry = TIMINGS.setdefault(label, [0.0, 0])
    entry[0] += seconds
    entry[1] += 1


def timed(owner: Any, attribute: str, label: str) -> None:
    original: Callable[..., Any] | None = getattr(owner, attribute, None)
    if original is None:
        return

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _add(label, time.perf_counter() - started)

    setattr(owner, attribute, wrapper)


class _TimedStream:
    """zstd's stream writer with its write() and its close (the last frame) timed."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __enter__(self) -> _TimedStream:
        self._inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        started = time.perf_counter()
        self._inner.__exit__(*exc)
        _add("zstd finish (last frame, flush)", time.perf_counter() - started)

    def write(self, chunk: bytes) -> int:
        started = time.perf_counter()
        written: int = self._inner.write(chunk)
        _add("zstd write (compress, sha256, hand parts to upload)", time.perf_counter() - started)
        return written


def _timed_zstandard(real: types.ModuleType) -> types.SimpleNamespace:
    class Compressor:
        def __init__(self, **kwargs: Any) -> None:
            self._inner = real.ZstdCompressor(**kwargs)

        def stream_writer(self, *args: Any, **kwargs: Any) -> _TimedStream:
            return _TimedStream(self._inner.stream_writer(*args, **kwargs))

    return types.SimpleNamespace(ZstdCompressor=Compressor, ZstdError=real.ZstdError)


def sha256_seconds_per_gb() -> float:
    block = os.urandom(64 * 1024 * 1024)
    digest = hashlib.sha256()
    started = time.perf_counter()
    for _ in range(4):
        digest.update(block)
    return (time.perf_counter() - started) / (4 * len(block) / 1e9)


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _timed_chunks(iterate: Callable[..., Iterator[bytes]]) -> Callable[..., Iterator[bytes]]:
    """The download: the time spent waiting for each next chunk of the object."""

    @functools.wraps(iterate)
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        chunks = iterate(*args, **kwargs)
        while True:
            started = time.perf_counter()
            try:
                chunk = next(chunks)
            except StopIteration:
                _add("download (waiting for S3)", time.perf_counter() - started)
                return
            _add("download (waiting for S3)", time.perf_counter() - started)
            yield chunk

    return wrapper


def instrument_backup() -> Callable[[Any, Any], Any]:
    import zstandard

    from drsentry.adapters import buckets as storage
    from drsentry.adapters import pgmeta, postgres
    from drsentry.adapters.secrets import Credentials
    from drsentry.adapters.table import Catalog
    from drsentry.adapters.table.locks import RunLocks
    from drsentry.jobs.backup import dump
    from drsentry.jobs.backup import job as backup
    from drsentry.jobs.notify.notifier import Notifier

    timed(backup, "run_scheduled_backup", "total (run_scheduled_backup)")
    timed(backup, "backup_target", "backup_target")
    timed(backup, "replicate_backup", "replica copy")
    timed(RunLocks, "acquire", "catalog: lock")
    timed(RunLocks, "release", "catalog: unlock")
    timed(Catalog, "latest_completed", "catalog: previous backup (tier)")
    timed(Catalog, "put_backup", "catalog: write record")
    timed(Credentials, "dsn", "credentials")
    timed(dump, "find_tool", "find pg_dump (pg_dump --version)")
    timed(postgres.psycopg, "connect", "connect")
    timed(postgres, "read_facts", "facts (in the snapshot)")
    timed(pgmeta, "count_rows", "facts: count(*) per table")
    timed(pgmeta, "schema_fingerprint", "facts: schema fingerprint")
    timed(dump.DatabaseDump, "_stream", STREAM)
    dump.zstandard = _timed_zstandard(zstandard)  # type: ignore[assignment]
    timed(storage.MultipartWriter, "write", "multipart write (sha256, buffer, submit)")
    timed(storage.MultipartWriter, "_submit", "multipart: wait for a free upload slot")
    timed(storage.MultipartWriter, "_upload_part", "upload_part (summed over threads)")
    timed(storage.MultipartWriter, "complete", COMPLETE)
    timed(storage.Bucket, "put_tags", TAGS)
    timed(storage.Bucket, "put_json", "manifest")
    timed(Notifier, "send", "notify (SNS, Slack)")
    return backup.run_scheduled_backup


def instrument_verify() -> Callable[[Any, Any], Any]:
    from drsentry.adapters import buckets as storage
    from drsentry.adapters import pgmeta
    from drsentry.adapters import restore_stream as restore
    from drsentry.adapters import throwaway_server as throwaway
    from drsentry.adapters.table import Catalog
    from drsentry.adapters.table.locks import RunLocks
    from drsentry.adapters.table.verifications import VerificationLog
    from drsentry.jobs.notify.notifier import Notifier
    from drsentry.jobs.verify import checks, job, run, scratch

    timed(job, "run_scheduled_verify", "total (run_scheduled_verify)")
    timed(RunLocks, "acquire", "catalog: lock")
    timed(RunLocks, "release", "catalog: unlock")
    timed(Catalog, "iter_backups", "catalog: list backups")
    timed(run.VerificationRun, "_prepare", "credentials, pg_restore --version")
    timed(scratch, "find_server_binaries", "throwaway: find postgres (postgres --version)")
    timed(throwaway, "remove_leftovers", "throwaway: remove leftover directories")
    timed(throwaway, "_initdb", "throwaway: initdb")
    timed(throwaway, "_start", "throwaway: start postgres until ready")
    timed(throwaway, "destroy", "throwaway: stop postgres, remove its directory")
    timed(scratch, "require_extensions", "throwaway: extensions the backup needs (archive head)")
    timed(run.VerificationRun, "_bring_roles", "roles from the backup's roles object")
    timed(scratch.ScratchDatabase, "drop_leftovers", "scratch: drop leftovers")
    timed(scratch.ScratchDatabase, "create", "scratch: create database")
    timed(run.VerificationRun, "_expected", "manifest")
    timed(run, "stream_restore", "restore stream (download -> sha256 -> zstd -> pg_restore)")
    storage.ObjectStore.iter_chunks = _timed_chunks(storage.ObjectStore.iter_chunks)  # type: ignore[method-assign]
    timed(restore._ZstdFrames, "decompress", "zstd decompress")
    timed(restore, "_write", "feed pg_restore (blocked while it works)")
    timed(restore, "_wait", "pg_restore after the last byte (indexes, constraints)")
    timed(checks.RestoredDatabaseChecks, "run", "checks on the restored database")
    timed(checks.RestoredDatabaseChecks, "_check_critical_tables", "check: critical tables")
    timed(pgmeta, "count_rows", "check: count(*) per table")
    timed(checks.RestoredDatabaseChecks, "_check_drift", "check: drift (verification log)")
    timed(checks.RestoredDatabaseChecks, "_check_functions", "check: functions")
    timed(checks.RestoredDatabaseChecks, "_check_rls", "check: row-level security")
    timed(checks.RestoredDatabaseChecks, "_check_size", "check: database size")
    timed(checks.RestoredDatabaseChecks, "_check_fingerprint", "check: schema fingerprint")
    timed(run, "check_storage", "check: storage manifests")
    timed(scratch.ScratchDatabase, "drop", "scratch: drop database")
    timed(VerificationLog, "put", "verification log: write record")
    timed(Notifier, "send", "notify (SNS, Slack)")
    return job.run_scheduled_verify


STREAM = "stream (pg_dump -> zstd -> S3), tags"
COMPLETE = "complete upload (last parts, CompleteMultipartUpload)"
TAGS = "tags: SHA-256 and size (PutObjectTagging)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("capability", choices=("backup", "verify"))
    parser.add_argument("--target", required=True)
    args = parser.parse_args()

    started_main = time.time()
    interpreter_seconds = started_main - psutil.Process().create_time()
    began = time.perf_counter()
    from drsentry.core.config import load_config
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.runtime import build_runtime

    run_scheduled = instrument_backup() if args.capability == "backup" else instrument_verify()
    imports_seconds = time.perf_counter() - began

    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"  # as the CLI does
    config_began = time.perf_counter()
    runtime = build_runtime(load_config(os.environ["DRSENTRY_CONFIG"]))
    config_seconds = time.perf_counter() - config_began
    event = ScheduledEvent.now(args.target, region=runtime.config.storage.region)
    result = run_scheduled(runtime, event).document()

    steps = {
        label: {"seconds": round(total, 3), "calls": int(calls)} for label, (total, calls) in TIMINGS.items()
    }
    document: dict[str, Any] = {
        "capability": args.capability,
        "target": args.target,
        "interpreter_start_seconds": round(interpreter_seconds, 3),
        "imports_seconds": round(imports_seconds, 3),
        "config_and_clients_seconds": round(config_seconds, 3),
    }
    if args.capability == "backup":
        record = result["backups"][0]
        inside = sum(
            TIMINGS.get(label, [0.0, 0])[0]
            for label in (
                "zstd write (compress, sha256, hand parts to upload)",
                "zstd finish (last frame, flush)",
                COMPLETE,
                TAGS,
            )
        )
        other = TIMINGS.get(STREAM, [0.0, 0])[0] - inside
        steps["stream other (waiting for pg_dump's output)"] = {"seconds": round(other, 3), "calls": 1}
        document.update(
            status=record["status"],
            error=record.get("error"),
            size_bytes=record.get("size_bytes"),
            database_size_bytes=record.get("database_size_bytes"),
            sha256_seconds_per_gb=round(sha256_seconds_per_gb(), 3),
        )
        ok = record["status"] == "completed"
    else:
        verifications = result.get("verifications") or [{}]
        record = verifications[0]
        document.update(
            status=record.get("status"),
            restore_seconds=record.get("restore_seconds"),
            error=record.get("error_details") or result.get("unverified"),
        )
        ok = record.get("status") in {"success", "warning"}
    document["steps"] = steps
    document["peak_rss_bytes"] = _peak_rss()
    print(json.dumps(document, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
