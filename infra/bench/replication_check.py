"""Benchmark: the replication check over 10,000 catalog entries on a local moto server.

Not a test: it starts its own moto server (ThreadedMotoServer on 127.0.0.1), creates the
buckets, table and topic a config names, writes N synthetic completed backups spread over
the last 7 days (a small object and its manifest in the primary and in the replica
bucket, one catalog record each), then times ``check_replication`` twice:

- ``first``: every record still says ``replica: pending``, so the check also writes each
  backup's new state (the first check after an upgrade or a bulk import);
- ``steady``: the hourly case, every record already ``ok`` and its replica unchanged since
  verified, so one LIST per folder and page stands in for 10,000 HEADs.

Writes the timings to ``infra/bench/results/replication-<timestamp>.json``.

    .venv/bin/python infra/bench/replication_check.py [--backups 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PRIMARY_REGION = "us-east-1"
REPLICA_REGION = "eu-west-1"
OBJECT_SIZE = 1024
SETUP_THREADS = 32


def local_aws_environment(endpoint: str) -> None:
    """Point boto3 at the moto server with throw-away credentials; no metrics on stdout."""
    os.environ.update(
        {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": PRIMARY_REGION,
            "POWERTOOLS_METRICS_DISABLED": "true",
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    os.environ.pop("AWS_PROFILE", None)


def bench_config() -> Any:
    from drsentry.core.config import parse_config

    suffix = secrets.token_hex(4)
    raw = {
        "storage": {
            "bucket": f"bench-primary-{suffix}",
            "region": PRIMARY_REGION,
            "replica": {"bucket": f"bench-replica-{suffix}", "region": REPLICA_REGION, "mode": "copy"},
        },
        "catalog": {"table": f"bench-catalog-{suffix}"},
        "notifications": {"sns_topic_arn": f"arn:aws:sns:{PRIMARY_REGION}:123456789012:bench-{suffix}"},
        "targets": [{"name": "app", "dsn": "postgresql://bench@localhost/app"}],
    }
    return parse_config(json.dumps(raw))


def synthetic_catalog(runtime: Any, backups: int) -> list[Any]:
    """N completed backups, one a minute going back from now, objects in both buckets."""
    from drsentry.core.records import BackupRecord, iso, new_backup_id
    from drsentry.jobs.backup.rules import object_keys

    config = runtime.config
    primary = runtime.clients.s3(PRIMARY_REGION)
    replica = runtime.clients.s3(REPLICA_REGION)
    now = datetime.now(UTC)
    step = min(timedelta(minutes=1), (timedelta(days=7) - timedelta(hours=1)) / backups)

    def make(index: int) -> Any:
        started = now - step * (index + 1)
        backup_id = new_backup_id(started)
        key, manifest_key = object_keys(config.storage.prefix, "app", backup_id)
        body = secrets.token_bytes(OBJECT_SIZE)
        sha256 = hashlib.sha256(body).hexdigest()
        tags = f"sha256={sha256}&size-bytes={len(body)}"
        manifest = json.dumps({"backup_id": backup_id, "sha256": sha256}).encode()
        for s3, bucket in ((primary, config.storage.bucket), (replica, config.storage.replica.bucket)):
            s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"backup-id": backup_id}, Tagging=tags)
            s3.put_object(Bucket=bucket, Key=manifest_key, Body=manifest)
        return BackupRecord(
            target="app",
            backup_id=backup_id,
            status="completed",
            started_at=iso(started),
            finished_at=iso(started + timedelta(seconds=20)),
            duration_seconds=20.0,
            size_bytes=len(body),
            sha256=sha256,
            bucket=config.storage.bucket,
            key=key,
            manifest_key=manifest_key,
            tier="hourly",
            replica="pending",
        )

    with ThreadPoolExecutor(max_workers=SETUP_THREADS) as pool:
        records = list(pool.map(make, range(backups)))
    write_records(runtime, records)
    return records


def write_records(runtime: Any, records: list[Any]) -> None:
    from drsentry.adapters.table.catalog import backup_item
    from drsentry.adapters.table.items import to_item

    dynamodb = runtime.clients.dynamodb
    items = [{"PutRequest": {"Item": to_item(backup_item(record))}} for record in records]
    for start in range(0, len(items), 25):
        pending: dict[str, Any] = {runtime.config.catalog.table: items[start : start + 25]}
        while pending:
            pending = dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


def timed_check(runtime: Any) -> tuple[float, Any]:
    from drsentry.jobs.replication.check import check_replication

    started = time.perf_counter()
    report = check_replication(runtime, "app")
    return time.perf_counter() - started, report


def timed_catalog_listing(runtime: Any) -> float:
    from drsentry.jobs.replication.check import WINDOW, backups_in_window

    started = time.perf_counter()
    backups_in_window(runtime, "app", runtime.clock() - WINDOW)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backups", type=int, default=10_000, help="synthetic catalog entries (default 10000)"
    )
    args = parser.parse_args()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        local_aws_environment(f"http://{host}:{port}")
        import logging

        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        from drsentry.jobs.replication.check import HEAD_CONCURRENCY
        from drsentry.jobs.runtime import build_runtime
        from drsentry.local.provision import provision

        config = bench_config()
        runtime = build_runtime(config)
        provision(config, runtime.clients, secret_values={})
        setup_started = time.perf_counter()
        synthetic_catalog(runtime, args.backups)
        setup_seconds = time.perf_counter() - setup_started
        print(f"setup: {args.backups} backups in {setup_seconds:.1f}s", file=sys.stderr)

        first_seconds, first = timed_check(runtime)
        print(f"first check (writes every state): {first_seconds:.1f}s {first.counts}", file=sys.stderr)
        steady_seconds, steady = timed_check(build_runtime(config))
        print(f"steady check (hourly case): {steady_seconds:.1f}s {steady.counts}", file=sys.stderr)
        listing_seconds = timed_catalog_listing(build_runtime(config))
        print(f"of which the catalog query: about {listing_seconds:.1f}s", file=sys.stderr)
    finally:
        server.stop()

    ok = all(report.status == "ok" and report.counts["ok"] == args.backups for report in (first, steady))
    result = {
        "benchmark": "replication-check",
        "backups": args.backups,
        "object_size_bytes": OBJECT_SIZE,
        "head_concurrency": HEAD_CONCURRENCY,
        "setup_seconds": round(setup_seconds, 2),
        "first_check_seconds": round(first_seconds, 2),
        "steady_check_seconds": round(steady_seconds, 2),
        # The same window query alone: on moto, DynamoDB's response serialisation dominates.
        "catalog_query_seconds": round(listing_seconds, 2),
        "first_check": {"status": first.status, "counts": first.counts},
        "steady_check": {"status": steady.status, "counts": steady.counts},
        "correct": ok,
        "measured_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "moto": version("moto"),
            "boto3": version("boto3"),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"replication-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {path}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
