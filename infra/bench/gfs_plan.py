"""Benchmark: the GFS retention planner over 100,000 catalog rows.

Not a test. Builds N synthetic backup records (one every 20 minutes back from now, about
3.8 years for 100,000; every 17th failed, a few day-long outages, some monthly ones
already archived, 500 verified) and times ``gfs.plan_retention`` on them several times,
the way the archive run calls it with the default retention (7d / 30d / 365d / 2555d).
Building the records is not timed: in a real run they come from DynamoDB pages.

Writes the timings to ``infra/bench/results/gfs-<timestamp>.json``.

    .venv/bin/python infra/bench/gfs_plan.py [--rows 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

from drsentry.core.config import RetentionConfig
from drsentry.core.gfs import plan_retention
from drsentry.core.records import ArchiveCopy, BackupRecord, iso

RESULTS = Path(__file__).resolve().parent / "results"
INTERVAL = timedelta(minutes=20)
RPO = timedelta(hours=1)


def synthetic_catalog(rows: int, now: datetime, seed: int = 5) -> tuple[list[BackupRecord], set[str]]:
    randomiser = random.Random(seed)
    outages = {randomiser.randrange(0, rows // 72) for _ in range(20)}  # day numbers back from now
    records: list[BackupRecord] = []
    for serial in range(rows):
        started = now - INTERVAL * serial
        status = "failed" if serial % 17 == 0 or serial // 72 in outages else "completed"
        archive = None
        if status == "completed" and started.day == 1 and started.hour == 0 and started.minute < 20:
            archive = ArchiveCopy(bucket="archive", archived_at=iso(started + timedelta(days=1)))
        records.append(
            BackupRecord(
                target="app",
                backup_id=f"{started:%Y%m%dT%H%M%S}000Z-{serial:08x}",
                status=status,  # type: ignore[arg-type]
                started_at=iso(started),
                size_bytes=1024,
                sha256="0" * 64,
                bucket="primary",
                key=f"backups/app/{serial}.dump",
                manifest_key=f"backups/app/{serial}.manifest.json",
                archive=archive,
            )
        )
    completed = [record.backup_id for record in records if record.status == "completed"]
    verified = set(randomiser.sample(completed, min(500, len(completed))))
    return records, verified


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    now = datetime.now(UTC).replace(microsecond=0)
    began = time.perf_counter()
    records, verified = synthetic_catalog(args.rows, now)
    build_seconds = time.perf_counter() - began
    print(f"built {len(records)} records in {build_seconds:.1f}s", file=sys.stderr)

    retention = RetentionConfig()
    timings = []
    plan = None
    for _ in range(args.repeat):
        began = time.perf_counter()
        plan = plan_retention(records, now=now, retention=retention, rpo=RPO, verified_success=verified)
        timings.append(time.perf_counter() - began)
    assert plan is not None
    print(f"planned {args.rows} rows: best {min(timings):.3f}s, worst {max(timings):.3f}s", file=sys.stderr)

    correct = len(plan.decisions) + plan.ignored == args.rows and plan.counts["expire"] > 0
    result = {
        "benchmark": "gfs-plan",
        "rows": args.rows,
        "repeat": args.repeat,
        "plan_seconds": {
            "best": round(min(timings), 4),
            "median": round(statistics.median(timings), 4),
            "worst": round(max(timings), 4),
        },
        "counts": plan.counts,
        "slots": plan.slot_counts(),
        "retention": retention.model_dump(mode="json"),
        "correct": correct,
        "measured_at": iso(datetime.now(UTC)),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "pydantic": version("pydantic"),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"gfs-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {path}", file=sys.stderr)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
