"""The Object Lock dates the retention planner gives a backup's primary copy (core/gfs.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drsentry.core import gfs
from drsentry.core.config import RetentionConfig
from drsentry.core.records import ArchiveCopy, BackupRecord, iso, new_backup_id

RETENTION = RetentionConfig()
# Wednesday 2026-04-01 09:05 UTC: the first of a month, mid ISO week (Monday 2026-03-30)
FIRST_OF_APRIL = datetime(2026, 4, 1, 9, 5, tzinfo=UTC)


def test_a_backup_is_first_of_exactly_the_periods_its_predecessor_is_not_in() -> None:
    previous = datetime(2026, 3, 31, 23, 5, tzinfo=UTC)  # same ISO week, other month and day
    assert gfs.first_of(FIRST_OF_APRIL, previous) == ("monthly", "daily", "hourly")
    assert gfs.first_of(FIRST_OF_APRIL, None) == ("monthly", "weekly", "daily", "hourly")
    assert gfs.first_of(FIRST_OF_APRIL, FIRST_OF_APRIL - timedelta(minutes=3)) == ()


def test_the_primary_lock_ends_with_the_longest_slot_the_primary_copy_serves() -> None:
    tiers = gfs.first_of(FIRST_OF_APRIL, datetime(2026, 3, 31, 23, 5, tzinfo=UTC))
    # archiving on: the archive copy serves the monthly slot; the daily one is the longest left
    assert gfs.primary_retain_until(FIRST_OF_APRIL, tiers, RETENTION, archive_enabled=True) == datetime(
        2026, 5, 1, tzinfo=UTC
    )
    # archiving off: the primary copy serves the monthly slot too
    assert gfs.primary_retain_until(FIRST_OF_APRIL, tiers, RETENTION, archive_enabled=False) == datetime(
        2026, 4, 1, tzinfo=UTC
    ) + timedelta(days=2555)
    # the first of nothing still holds its hour's lock
    assert gfs.primary_retain_until(FIRST_OF_APRIL, (), RETENTION, archive_enabled=True) == datetime(
        2026, 4, 8, 9, tzinfo=UTC
    )


def test_the_plan_dates_agree_with_the_backup_time_dates() -> None:
    record = BackupRecord(
        target="db",
        backup_id=new_backup_id(FIRST_OF_APRIL),
        status="completed",
        started_at=iso(FIRST_OF_APRIL),
        bucket="b",
        key="k",
        manifest_key="m",
    )
    plan = gfs.plan_retention(
        [record], now=FIRST_OF_APRIL + timedelta(hours=2), retention=RETENTION, rpo=timedelta(hours=1)
    )
    (decision,) = plan.decisions
    expected = gfs.primary_retain_until(
        FIRST_OF_APRIL, gfs.first_of(FIRST_OF_APRIL, None), RETENTION, archive_enabled=True
    )
    assert gfs.planned_retain_until(decision, RETENTION, archive_enabled=True) == expected
    assert expected == datetime(2026, 3, 30, tzinfo=UTC) + timedelta(days=365)


def test_an_archived_monthly_whose_shorter_slots_ended_loses_only_its_primary_copy() -> None:
    started = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)
    now = started + timedelta(days=400)
    archived = ArchiveCopy(bucket="a", archived_at=iso(started + timedelta(days=1)))
    old = BackupRecord(
        target="db",
        backup_id=new_backup_id(started),
        status="completed",
        started_at=iso(started),
        bucket="b",
        key="k",
        manifest_key="m",
        archive=archived,
    )
    newest = old.model_copy(
        update={
            "backup_id": new_backup_id(now - timedelta(minutes=5)),
            "started_at": iso(now - timedelta(minutes=5)),
            "archive": None,
        }
    )
    unarchived = old.model_copy(update={"archive": None})

    def action(record: BackupRecord) -> str:
        plan = gfs.plan_retention([record, newest], now=now, retention=RETENTION, rpo=timedelta(hours=1))
        return next(d.action for d in plan.decisions if d.backup_id == record.backup_id)

    assert action(old) == "expire_primary"
    assert action(unarchived) == "archive"  # no verified archive copy yet: the primary copy stays
    assert action(old.model_copy(update={"primary_expired_at": iso(now)})) == "keep"
    plan = gfs.plan_retention(
        [old, newest], now=now, retention=RETENTION, rpo=timedelta(hours=1), archive_enabled=False
    )
    assert next(d.action for d in plan.decisions if d.backup_id == old.backup_id) == "keep"
