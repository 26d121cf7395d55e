"""The `throwaway` section of `make bench`: verify into a blank throwaway server (no scratch server
configured, the default) against a bare ``pg_restore`` of the same dump into the standing server
with pg_restore's defaults, plus the restore method on the throwaway server: the single streamed
restore verify uses against ``pg_restore --jobs 2`` from a downloaded file.

- drsentry-verify-throwaway: ``drsentry run verify`` with the target's scratch server removed;
  the record's ``server.start_seconds``, ``restore_seconds`` and ``checks_seconds`` are kept.
- pg_restore: the floor of run.py's verify section (downloaded file, standing server).
- pg_restore-jobs2-throwaway: the object downloaded and decompressed to a file, then
  ``pg_restore --jobs 2`` into a throwaway server tuned as verify tunes it (download included,
  server start excluded: verify's restore_seconds excludes it too).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import benchdb
import probe
import psycopg
import report
import yaml
from psycopg.conninfo import make_conninfo

from drsentry.adapters.throwaway_server import find_server_binaries, throwaway_server

if TYPE_CHECKING:
    from run import Bench


def throwaway_config(bench: Bench) -> Path:
    """bench.yaml without the scratch server: verify starts a throwaway server per run."""
    document = yaml.safe_load(bench.config_path.read_text())
    for target in document["targets"]:
        target["verify"].pop("scratch_dsn", None)
    path = bench.config_path.with_name("bench-throwaway.yaml")
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path


def verify_throwaway(bench: Bench, database: benchdb.BenchDatabase, config: Path) -> probe.Sample:
    argv = [bench.drsentry, "run", "verify", "--target", database.name, "--json"]
    sample = bench.measure("drsentry-verify-throwaway", argv, {**bench.env, "DRSENTRY_CONFIG": str(config)})
    try:
        verification = json.loads(sample.stdout)["verifications"][0]
    except (json.JSONDecodeError, KeyError, IndexError):
        sample.extra["error"] = sample.stderr.strip()[-500:]
        sample.returncode = sample.returncode or 1
        return sample
    server = verification.get("server") or {}
    sample.extra.update(
        status=verification["status"],
        restore_seconds=verification["restore_seconds"],
        checks_seconds=verification.get("checks_seconds"),
        server_start_seconds=server.get("start_seconds"),
        server_settings=server.get("settings"),
    )
    if verification["status"] == "failure":
        sample.extra["error"] = verification.get("error_details")
        sample.returncode = sample.returncode or 1
    return sample


def jobs2_on_throwaway(bench: Bench, record: dict[str, Any]) -> probe.Sample:
    binaries = find_server_binaries()
    with throwaway_server(binaries) as server:
        started = time.perf_counter()
        dump = bench.prepare_floor_dump(record)
        download_seconds = time.perf_counter() - started
        try:
            with psycopg.connect(server.dsn(), autocommit=True) as admin:
                admin.execute("create database bench_jobs2")
            dsn, env = bench.pg_env(make_conninfo(server.dsn(), dbname="bench_jobs2"))
            env["PGOPTIONS"] = f"-c maintenance_work_mem={server.settings['maintenance_work_mem']}"
            argv = [
                str(bench.bin_dir / "pg_restore"),
                "--jobs",
                "2",
                *RESTORE_OPTIONS,
                f"--dbname={dsn}",
                str(dump),
            ]
            sample = bench.measure("pg_restore-jobs2-throwaway", argv, env)
        finally:
            dump.unlink(missing_ok=True)
    sample.extra.update(
        download_seconds=round(download_seconds, 3),
        pg_restore_seconds=sample.wall_seconds,
        restore_seconds=round(download_seconds + sample.wall_seconds, 3),
        server_start_seconds=server.start_seconds,
    )
    return sample


RESTORE_OPTIONS = ("--no-owner", "--no-privileges", "--exit-on-error", "--no-tablespaces",
                   "--no-subscriptions", "--no-security-labels")  # fmt: skip


def throwaway_section(bench: Bench, database: benchdb.BenchDatabase) -> dict[str, Any]:
    record = bench.kept_backup.get(database.name)
    if record is None:
        bench.drsentry_backup(database)
        record = bench.kept_backup[database.name]
    config = throwaway_config(bench)
    floor_dump = bench.prepare_floor_dump(record)
    floor_copy = floor_dump.with_name("floor-standing.dump")
    floor_dump.rename(floor_copy)
    try:
        contenders: dict[str, Callable[[], probe.Sample]] = {
            "drsentry-verify-throwaway": lambda: verify_throwaway(bench, database, config),
            "pg_restore": lambda: bench.floor_restore(floor_copy),
            "pg_restore-jobs2-throwaway": lambda: jobs2_on_throwaway(bench, record),
        }
        samples = bench.alternate(contenders, database)
    finally:
        floor_copy.unlink(missing_ok=True)
    summary = {
        name: report.summarize([s for s in samples if s["contender"] == name], database.size_bytes)
        for name in contenders
    }
    for name, keys in (
        ("drsentry-verify-throwaway", ("server_start_seconds", "restore_seconds", "checks_seconds")),
        ("pg_restore-jobs2-throwaway", ("server_start_seconds", "download_seconds", "restore_seconds")),
    ):
        for key in keys:
            values = [s[key] for s in samples if s["contender"] == name and s.get(key) is not None]
            if values:
                summary[name][key] = report.spread(values)
    return {
        "database": database.name,
        "backup_id": record["backup_id"],
        "samples": samples,
        "summary": summary,
    }
