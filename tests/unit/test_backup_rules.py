"""Pure rules of the backup: GFS tiers, part sizes, ids, keys, tool versions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drsentry.adapters.buckets import MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, TiB, capacity, part_size
from drsentry.adapters.pgmeta import acl_grants
from drsentry.adapters.pgtools import PgTool, error_lines, require_compatible
from drsentry.core.errors import BackupNotFound, PgToolsError
from drsentry.core.gfs import assign_tier
from drsentry.core.records import BackupRecord, check_backup_id, new_backup_id
from drsentry.jobs.backup.rules import backup_metrics, globals_key, object_keys, tool_failure


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("previous", "current", "tier"),
    [
        (None, "2026-11-22T10:00", "monthly"),
        ("2026-10-31T23:00", "2026-11-01T00:00", "monthly"),  # new month (and a Sunday→Sunday week)
        ("2026-11-22T23:00", "2026-11-23T00:00", "weekly"),  # Sunday → Monday: new ISO week
        ("2026-11-23T09:00", "2026-11-24T00:30", "daily"),
        ("2026-11-24T00:30", "2026-11-24T01:30", "hourly"),
        ("2026-11-24T01:30", "2026-11-24T01:45", "hourly"),
        ("2025-11-24T01:30", "2026-11-24T01:45", "monthly"),  # same month number, another year
        ("2026-12-28T10:00", "2027-01-01T10:00", "monthly"),  # ISO week 53 spans the year
    ],
)
def test_tier_rule(previous: str | None, current: str, tier: str) -> None:
    assert assign_tier(at(current), at(previous) if previous else None) == tier


def test_iso_week_across_a_month_is_monthly_first() -> None:
    # 2026-12-31 (Thu) and 2027-01-01 (Fri) share ISO week 2026-W53: the month wins
    assert assign_tier(at("2027-01-01T08:00"), at("2026-12-31T08:00")) == "monthly"
    # 2027-01-03 (Sun) is still W53; 2027-01-04 (Mon) opens W01
    assert assign_tier(at("2027-01-03T08:00"), at("2027-01-01T08:00")) == "daily"
    assert assign_tier(at("2027-01-04T08:00"), at("2027-01-03T08:00")) == "weekly"


def test_previous_backup_from_a_clock_running_ahead_counts_as_the_same_slot() -> None:
    assert assign_tier(at("2026-11-22T10:00"), at("2026-11-22T11:00")) == "hourly"
    assert assign_tier(at("2026-11-30T23:59"), at("2026-12-01T00:01")) == "hourly"


@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400)),
)
def test_tier_matches_slot_definitions(current: datetime, gap: timedelta) -> None:
    current = current.replace(tzinfo=UTC)
    previous = current - gap
    tier = assign_tier(current, previous)
    new_month = (previous.year, previous.month) != (current.year, current.month)
    new_week = previous.isocalendar()[:2] != current.isocalendar()[:2]
    new_day = previous.date() != current.date()
    expected = "monthly" if new_month else "weekly" if new_week else "daily" if new_day else "hourly"
    assert tier == expected


def test_parts_never_hit_the_limit_for_a_terabyte() -> None:
    assert capacity(MAX_PARTS) >= 5 * TiB  # S3's largest object
    parts_for_1tib = next(n for n in range(1, MAX_PARTS + 1) if capacity(n) >= TiB)
    assert parts_for_1tib < MAX_PARTS
    assert parts_for_1tib < 7500


def test_part_sizes_are_within_s3_limits() -> None:
    sizes = [part_size(n) for n in range(1, MAX_PARTS + 1)]
    assert min(sizes) >= MIN_PART_SIZE
    assert max(sizes) <= MAX_PART_SIZE
    assert sizes == sorted(sizes)
    assert part_size(1) == 6 * 1024 * 1024  # small dumps keep memory small
    assert part_size(1000) == part_size(1)
    assert part_size(1001) == 2 * part_size(1)


@pytest.mark.parametrize("number", [0, MAX_PARTS + 1])
def test_part_number_outside_range(number: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        part_size(number)


def test_backup_ids_sort_by_time_and_validate() -> None:
    early = new_backup_id(at("2026-11-22T18:00:00.001"))
    later = new_backup_id(at("2026-11-22T18:00:00.002"))
    assert early < later
    assert early.startswith("20261122T180000001Z-")
    assert check_backup_id(early) == early


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../etc/passwd",
        "20261122T180000001Z-1a2b3c4d/..",
        "latest",
        "20261122T180000001Z-1A2B3C4D",
        "20261122T180000Z-1a2b3c4d",
    ],
)
def test_malformed_backup_ids_are_refused(bad: str) -> None:
    with pytest.raises(BackupNotFound, match="malformed backup id"):
        check_backup_id(bad)


def test_object_keys_layout() -> None:
    dump, manifest = object_keys("backups/", "app", "20261122T180000001Z-1a2b3c4d")
    assert dump == "backups/app/2026/11/22/20261122T180000001Z-1a2b3c4d.dump"
    assert manifest == "backups/app/2026/11/22/20261122T180000001Z-1a2b3c4d.manifest.json"


def _tool(version: str) -> PgTool:
    from pathlib import Path

    return PgTool("pg_dump", Path("/usr/bin/pg_dump"), version, "PATH")


def test_pg_dump_older_than_server_is_refused() -> None:
    with pytest.raises(
        PgToolsError, match=r"pg_dump 15.4 \(/usr/bin/pg_dump\) is older than the server's PostgreSQL 16.2"
    ):
        require_compatible(_tool("15.4"), "16.2")


@pytest.mark.parametrize(("tool", "server"), [("16.0", "16.4"), ("18.6", "16.2"), ("17.1", "9.6")])
def test_pg_dump_same_or_newer_major_is_accepted(tool: str, server: str) -> None:
    require_compatible(_tool(tool), server)


def test_stderr_error_lines_are_detected() -> None:
    stderr = "pg_dump: warning: there are circular foreign-key constraints\npg_dump: error: query failed"
    assert error_lines(stderr) == ["pg_dump: error: query failed"]
    assert error_lines("pg_dump: warning: something harmless") == []


def test_pg_dump_failure_names_the_signal_or_the_exit_code_and_its_first_errors() -> None:
    assert tool_failure("pg_dump", -9, []) == "pg_dump was killed by signal 9"
    errors = [" pg_dump: error: a ", "pg_dump: error: b", "pg_dump: error: c", "pg_dump: error: d"]
    assert tool_failure("pg_dump", 1, errors) == (
        "pg_dump exited with code 1: pg_dump: error: a; pg_dump: error: b; pg_dump: error: c"
    )
    assert (
        tool_failure("pg_dumpall --globals-only", 1, ["x"])
        == "pg_dumpall --globals-only exited with code 1: x"
    )


def _record(status: str, **fields: object) -> BackupRecord:
    return BackupRecord.model_validate(
        {
            "target": "app",
            "backup_id": "20261122T180000001Z-1a2b3c4d",
            "status": status,
            "started_at": "2026-11-22T18:00:00Z",
            "bucket": "b",
            "key": "k",
            "manifest_key": "m",
            **fields,
        }
    )


def test_a_completed_backup_reports_success_size_a_fresh_age_and_throughput() -> None:
    record = _record("completed", size_bytes=4_000_000, database_size_bytes=20_000_000, duration_seconds=10.0)
    assert backup_metrics(record, newest_completed_age=None) == [
        ("BackupSuccess", "Count", 1),
        ("BackupFailure", "Count", 0),
        ("BackupSizeBytes", "Bytes", 4_000_000),
        ("BackupAgeSeconds", "Seconds", 0),
        ("BackupThroughputMBps", "None", 2.0),
        ("BackupDurationSeconds", "Seconds", 10.0),
    ]


def test_a_failed_backup_reports_the_newest_completed_backups_age_when_known() -> None:
    record = _record("failed", duration_seconds=3.0, error="pg_dump exited with code 1")
    assert backup_metrics(record, newest_completed_age=7200.0) == [
        ("BackupSuccess", "Count", 0),
        ("BackupFailure", "Count", 1),
        ("BackupAgeSeconds", "Seconds", 7200.0),
        ("BackupDurationSeconds", "Seconds", 3.0),
    ]
    # Unknown (the catalog did not answer): no age at all, which the alarm treats as stale.
    names = [name for name, _, _ in backup_metrics(record, newest_completed_age=None)]
    assert "BackupAgeSeconds" not in names


def test_grants_are_one_entry_per_grantee_with_sorted_privileges() -> None:
    grants = acl_grants(
        ["reader", "owner", "reader", "PUBLIC", "owner"], ["SELECT", "UPDATE", "INSERT*", "SELECT", "SELECT"]
    )
    assert grants == ("PUBLIC=SELECT", "owner=SELECT,UPDATE", "reader=INSERT*,SELECT")


def test_the_roles_object_lies_beside_the_dump() -> None:
    dump_key, _ = object_keys("backups/", "app", "20260105T010203Z-abcd1234")
    expected = dump_key.replace(".dump", ".globals.sql")
    assert globals_key("backups/", "app", "20260105T010203Z-abcd1234") == expected
