"""What drsentry's retention stores, and what it costs a month: hourly backups of one database.

Not a test. Replays one backup an hour for one and for seven years through the retention
planner itself (``gfs.plan_retention`` with the default retention 7d / 30d / 365d / 2555d),
applied once a day as the archive run applies it: `archive` gives the backup its archive copy
(DEEP_ARCHIVE), `expire` removes every copy, `expire_primary` removes the primary and replica
copies of a monthly backup whose archive copy serves its slot alone. "Before" is the same replay
without `expire_primary` (the primary copy of a monthly backup stayed for its whole monthly
retention); "after" applies it. At the end of each period it counts the copies in each storage
class and prices them.

Assumptions, stated in the output too: every backup (the stored, compressed dump) is
``--backup-gb`` GB; manifests and roles objects (kilobytes) are left out; the replica is in
``copy`` mode (STANDARD in the replica region); prices are S3 list prices per GB-month in
us-east-1 (STANDARD's first-50-TB tier applied flat, so large totals are slightly overstated),
without requests, retrievals or Deep Archive's 40 KB per-object overhead.

Writes ``infra/bench/results/storage-cost-<timestamp>.json`` and prints the Markdown table.

    .venv/bin/python infra/bench/storage_cost.py [--backup-gb 100]
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from drsentry.core.config import RetentionConfig
from drsentry.core.gfs import plan_retention
from drsentry.core.records import ArchiveCopy, BackupRecord, iso, new_backup_id

RESULTS = Path(__file__).resolve().parent / "results"
RPO = timedelta(hours=1)
# USD per GB-month, S3 list prices in us-east-1 (2025): STANDARD first 50 TB, DEEP_ARCHIVE.
PRICES = {"STANDARD": 0.023, "DEEP_ARCHIVE": 0.00099}
START = datetime(2026, 1, 1, tzinfo=UTC)


def replay(days: int, *, expire_primary: bool) -> dict[str, int]:
    """Copies per place after `days` days of hourly backups and one archive run a day."""
    retention = RetentionConfig()
    kept: dict[str, BackupRecord] = {}
    now = START
    for _ in range(days):
        for hour in range(24):
            started = now + timedelta(hours=hour, minutes=5)
            record = BackupRecord(
                target="db",
                backup_id=new_backup_id(started),
                status="completed",
                started_at=iso(started),
                bucket="primary",
                key="k",
                manifest_key="m",
            )
            kept[record.backup_id] = record
        now += timedelta(days=1)
        plan = plan_retention(list(kept.values()), now=now, retention=retention, rpo=RPO)
        for decision in plan.decisions:
            record = kept[decision.backup_id]
            if decision.action == "expire":
                del kept[decision.backup_id]
            elif decision.action == "archive":
                copy = ArchiveCopy(bucket="archive", archived_at=iso(now), retain_until=iso(now))
                kept[decision.backup_id] = record.model_copy(update={"archive": copy})
            elif decision.action == "expire_primary" and expire_primary:
                kept[decision.backup_id] = record.model_copy(update={"primary_expired_at": iso(now)})
    primary = sum(record.primary_expired_at is None for record in kept.values())
    archived = sum(record.archive is not None for record in kept.values())
    return {"primary": primary, "replica": primary, "archive": archived}


def costs(copies: dict[str, int], backup_gb: float) -> dict[str, Any]:
    standard_gb = (copies["primary"] + copies["replica"]) * backup_gb
    deep_gb = copies["archive"] * backup_gb
    monthly = standard_gb * PRICES["STANDARD"] + deep_gb * PRICES["DEEP_ARCHIVE"]
    return {
        **copies,
        "standard_gb": standard_gb,
        "deep_archive_gb": deep_gb,
        "usd_per_month": round(monthly, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backup-gb", type=float, default=100.0, help="size of one stored backup, GB")
    args = parser.parse_args()
    rows = []
    for years in (1, 7):
        days = 365 * years
        for label, expire_primary in (("before", False), ("after", True)):
            result = costs(replay(days, expire_primary=expire_primary), args.backup_gb)
            rows.append({"years": years, "when": label, **result})
    document = {
        "backup_gb": args.backup_gb,
        "prices_usd_per_gb_month": PRICES,
        "retention": {"hourly": "7d", "daily": "30d", "weekly": "365d", "monthly": "2555d"},
        "replica": "copy mode, STANDARD",
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"storage-cost-{stamp}.json").write_text(json.dumps(document, indent=2) + "\n")
    print(
        "| period | when | primary copies | replica copies | archive copies | STANDARD (TB) "
        "| DEEP_ARCHIVE (TB) | USD / month |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['years']} year{'s' if row['years'] > 1 else ''} | {row['when']} | {row['primary']} | "
            f"{row['replica']} | {row['archive']} | {row['standard_gb'] / 1000:.1f} | "
            f"{row['deep_archive_gb'] / 1000:.1f} | {row['usd_per_month']:,.2f} |"
        )


if __name__ == "__main__":
    main()
