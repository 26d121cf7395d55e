"""The GFS retention planner: which backups are kept, archived or expired.

Expected numbers are computed here independently of the planner, with datetime
arithmetic (the planner cuts slot keys out of ISO strings).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drsentry.core.config import RetentionConfig
from drsentry.core.gfs import RetentionPlan, assign_tier, plan_retention, slot_key
from drsentry.core.records import ArchiveCopy, BackupRecord, iso

NOW = datetime(2026, 11, 22, 18, 30, tzinfo=UTC)
DEFAULTS = RetentionConfig()  # 7d / 30d / 365d / 2555d
RPO = timedelta(hours=1)
WINDOWS = {
    "hourly": DEFAULTS.hourly,
    "daily": DEFAULTS.daily,
    "weekly": DEFAULTS.weekly,
    "monthly": DEFAULTS.monthly,
}


def backup(
    started: datetime,
    status: str = "completed",
    *,
    archive: ArchiveCopy | None = None,
    serial: int = 0,
) -> BackupRecord:
    return BackupRecord(
        target="app",
        backup_id=f"{started:%Y%m%dT%H%M%S}000Z-{serial:08x}",
        status=status,  # type: ignore[arg-type]
        started_at=iso(started),
        bucket="primary",
        key=f"backups/app/{serial}.dump",
        manifest_key=f"backups/app/{serial}.manifest.json",
        archive=archive,
    )


def plan(records: Iterable[BackupRecord], **overrides: object) -> RetentionPlan:
    arguments: dict[str, object] = {"now": NOW, "retention": DEFAULTS, "rpo": RPO}
    arguments.update(overrides)
    return plan_retention(list(records), **arguments)  # type: ignore[arg-type]


def by_id(result: RetentionPlan) -> dict[str, tuple[str, tuple[str, ...], str]]:
    return {d.backup_id: (d.action, d.slots, d.reason) for d in result.decisions}


# a year and more of hourly backups --------------------------------------------------


def synthetic_catalog() -> list[BackupRecord]:
    """400 days of hourly backups at :05, with outages and failed backups in awkward places.

    A failed backup is retried at :15 and the retry completes, so its slots move to the retry.
    """
    start = (NOW - timedelta(days=400)).replace(minute=5, second=0)
    outage_days = {start.date() + timedelta(days=n) for n in (37, 38, 200)}  # whole days missing
    outage_hours = (NOW - timedelta(days=3, hours=5), NOW - timedelta(days=3))  # five hours missing
    records: list[BackupRecord] = []
    moment = start
    serial = 0
    while moment <= NOW:
        serial += 1
        in_outage = moment.date() in outage_days or outage_hours[0] < moment < outage_hours[1]
        if not in_outage:
            first_of_month = moment.day == 1 and moment.hour == 0
            first_of_monday = moment.weekday() == 0 and moment.hour == 0
            if serial % 13 == 0 or first_of_month or first_of_monday:
                records.append(backup(moment, "failed", serial=serial))
                records.append(backup(moment + timedelta(minutes=10), serial=1_000_000 + serial))
            else:
                records.append(backup(moment, serial=serial))
        moment += timedelta(hours=1)
    return records


def period_start(tier: str, moment: datetime) -> datetime:
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if tier == "hourly":
        return moment.replace(minute=0, second=0, microsecond=0)
    if tier == "daily":
        return midnight
    if tier == "weekly":
        return midnight - timedelta(days=moment.weekday())
    return midnight.replace(day=1)


def expected_holders(records: list[BackupRecord], now: datetime) -> dict[str, set[str]]:
    """Per tier, the first completed backup of each period that began inside the tier's window."""
    completed = sorted((r.started, r.backup_id) for r in records if r.status == "completed")
    holders: dict[str, set[str]] = {}
    for tier, window in WINDOWS.items():
        first: dict[datetime, str] = {}
        for started, backup_id in completed:
            first.setdefault(period_start(tier, started), backup_id)
        holders[tier] = {backup_id for begins, backup_id in first.items() if begins > now - window}
    return holders


def test_synthetic_year_keeps_the_gfs_counts() -> None:
    # Given 400 days of hourly backups with outages, failed backups and their retries
    records = synthetic_catalog()

    # When retention is planned with the defaults (7d / 30d / 365d / 2555d)
    result = plan(records)

    # Then each tier holds what the independent count says ...
    holders = expected_holders(records, NOW)
    filled = result.slot_counts()
    for tier, ids in holders.items():
        assert {d.backup_id for d in result.decisions if any(s.startswith(tier) for s in d.slots)} == ids
        assert filled[tier] == len(ids), tier
    # ... which are the GFS counts: 7 x 24 hours but the 5-hour outage, 30 days, 52 ISO weeks
    # (Mondays of the last 365 days), and every month that the 400 days touch
    assert filled == {"hourly": 7 * 24 - 5, "daily": 30, "weekly": 52, "monthly": 14}
    # and nothing else is kept except the newest backup (it fills the current hour anyway)
    kept_ids = set().union(*holders.values())
    decisions = by_id(result)
    assert {i for i, (action, _, _) in decisions.items() if action != "expire"} == kept_ids
    assert result.counts["expire"] == len(decisions) - len(kept_ids)
    assert result.counts["ignored"] == sum(r.status == "failed" for r in records)
    # the failed first backups of each month and ISO week handed their slots to their retries
    started = {r.backup_id: r.started for r in records}
    for backup_id in holders["monthly"] | holders["weekly"]:
        moment = started[backup_id]
        if moment.day == 1 or moment.weekday() == 0:
            assert f"{moment:%H:%M}" == "00:15", backup_id


def test_every_kept_backup_says_which_slots_it_fills() -> None:
    records = synthetic_catalog()
    result = plan(records)
    started = {r.backup_id: r.started for r in records}
    for decision in result.decisions:
        for slot in decision.slots:
            tier, key = slot.split(" ")
            assert slot_key(tier, started[decision.backup_id]) == key  # type: ignore[arg-type]


def test_monthly_backups_without_an_archive_copy_are_to_be_archived() -> None:
    result = plan(synthetic_catalog())
    archive = result.with_action("archive")
    assert len(archive) == result.slot_counts()["monthly"]
    assert all(d.slots[0].startswith("monthly ") for d in archive)


def test_planning_100000_rows_decides_every_row() -> None:
    # How fast is measured by infra/bench/gfs_plan.py (`make bench`), not here: a timed unit
    # test fails on a loaded machine and proves nothing about speed on a quiet one.
    start = NOW - timedelta(minutes=20 * 100_000)
    records = [backup(start + timedelta(minutes=20 * n), serial=n) for n in range(100_000)]
    result = plan(records)
    assert len(result.decisions) == 100_000
    assert {d.backup_id for d in result.decisions} == {r.backup_id for r in records}


# slot rules -------------------------------------------------------------------------


def test_a_failed_first_backup_hands_its_slots_to_the_next_completed_one() -> None:
    day = NOW - timedelta(days=10)
    first = backup(day.replace(hour=0, minute=5), "failed", serial=1)
    second = backup(day.replace(hour=1, minute=5), serial=2)
    third = backup(day.replace(hour=2, minute=5), serial=3)
    decisions = by_id(plan([first, second, third, backup(NOW, serial=4)]))
    assert first.backup_id not in decisions
    assert (
        decisions[second.backup_id][1] == (f"daily {day:%Y-%m-%d}",)
        or f"daily {day:%Y-%m-%d}" in (decisions[second.backup_id][1])
    )
    assert decisions[third.backup_id][0] == "expire"  # an hour older than 7 days and not first of its day


def test_an_expired_first_backup_holds_no_slot() -> None:
    day = NOW - timedelta(days=3)
    gone = backup(day.replace(hour=4, minute=0), "expired", serial=1)
    heir = backup(day.replace(hour=4, minute=30), serial=2)
    decisions = by_id(plan([gone, heir, backup(NOW, serial=3)]))
    assert f"hourly {day:%Y-%m-%d}T04" in decisions[heir.backup_id][1]


def test_one_backup_fills_several_slots() -> None:
    # 2026-11-01 is a Sunday: the first backup of November is not the first of its ISO week
    first_of_month = backup(datetime(2026, 11, 1, 0, 5, tzinfo=UTC), serial=1)
    first_of_week = backup(datetime(2026, 11, 2, 0, 5, tzinfo=UTC), serial=2)
    decisions = by_id(plan([first_of_month, first_of_week], retention=RetentionConfig(hourly="30d")))
    assert decisions[first_of_month.backup_id][1] == (
        "monthly 2026-11",
        "weekly 2026-W44",
        "daily 2026-11-01",
        "hourly 2026-11-01T00",
    )
    assert decisions[first_of_week.backup_id][1] == (
        "weekly 2026-W45",
        "daily 2026-11-02",
        "hourly 2026-11-02T00",
    )


def test_the_window_is_measured_from_the_start_of_the_period() -> None:
    # NOW is 18:30: the hour that began at 19:00 seven days ago is the oldest one inside 7d;
    # the hour that began at 18:00 started 7d 30m ago, although its backup is 7d 25m old.
    anchor = backup(datetime(2026, 11, 1, 0, 5, tzinfo=UTC), serial=9)  # holds the month, week, day
    inside = backup(NOW - DEFAULTS.hourly + timedelta(minutes=35), serial=1)
    outside = backup(NOW - DEFAULTS.hourly - timedelta(minutes=25), serial=2)
    records = [anchor, outside, inside, backup(NOW, serial=3)]
    decisions = by_id(plan(records, retention=RetentionConfig(daily="1s", weekly="1s", monthly="1s")))
    assert decisions[inside.backup_id] == ("keep", ("hourly 2026-11-15T19",), "")
    assert decisions[outside.backup_id][:2] == ("expire", ())


def test_a_second_backup_in_an_hour_says_why_it_goes() -> None:
    first = backup(NOW - timedelta(days=9, minutes=30), serial=1)
    second = backup(NOW - timedelta(days=9, minutes=10), serial=2)
    decisions = by_id(plan([first, second, backup(NOW, serial=3)]))
    assert decisions[second.backup_id][0] == "expire"
    assert decisions[second.backup_id][2].startswith("not the first completed backup of hour ")


def test_tier_at_backup_time_is_the_highest_slot_the_planner_sees() -> None:
    # With windows that never close, the planner's slots of a backup are the tier
    # assign_tier gave it when it was taken (or `hourly` when it is first of nothing).
    forever = RetentionConfig(hourly="100000d", daily="100000d", weekly="100000d", monthly="100000d")
    moments = [datetime(2026, 12, 20, tzinfo=UTC) + timedelta(hours=7 * n + n % 5) for n in range(400)]
    records = [backup(moment, serial=n) for n, moment in enumerate(moments)]
    decisions = by_id(plan(records, now=moments[-1] + timedelta(days=1), retention=forever))
    previous = None
    for record, moment in zip(records, moments, strict=True):
        slots = decisions[record.backup_id][1]
        highest = slots[0].split(" ")[0] if slots else "hourly"
        assert assign_tier(moment, previous) == highest, record.started_at
        previous = moment


# protections --------------------------------------------------------------------------


def test_the_newest_backup_is_kept_when_every_window_has_passed() -> None:
    old = [backup(NOW - timedelta(days=3000, hours=n), serial=n) for n in range(5)]
    decisions = by_id(plan(old))
    newest = max(old, key=lambda r: r.started_at)
    assert decisions[newest.backup_id] == ("keep", (), "newest completed backup")
    assert sum(action == "expire" for action, _, _ in decisions.values()) == 4


def test_the_newest_verified_backup_is_kept() -> None:
    first_of_hour = backup(NOW - timedelta(days=9, minutes=20), serial=1)
    verified = backup(NOW - timedelta(days=9, minutes=10), serial=2)
    newer = [backup(NOW - timedelta(days=9, minutes=5), serial=3), backup(NOW, serial=4)]
    decisions = by_id(plan([first_of_hour, verified, *newer], verified_success={verified.backup_id}))
    assert decisions[verified.backup_id] == ("keep", (), "newest backup that verified success")
    assert decisions[newer[0].backup_id][0] == "expire"


def test_nothing_younger_than_the_rpo_expires() -> None:
    recent = [backup(NOW - timedelta(minutes=m), serial=m) for m in (50, 40, 30, 20)]
    decisions = by_id(plan(recent, rpo=timedelta(hours=1)))
    assert "expire" not in {action for action, _, _ in decisions.values()}
    assert decisions[recent[1].backup_id] == ("keep", (), "younger than the RPO (1h)")
    assert decisions[recent[3].backup_id] == ("keep", (), "newest completed backup")


def test_an_archive_copy_under_lock_keeps_its_backup() -> None:
    until = iso(NOW + timedelta(days=2))
    archived = ArchiveCopy(bucket="archive", archived_at=iso(NOW - timedelta(days=2555)), retain_until=until)
    old = backup(NOW - timedelta(days=2556), archive=archived, serial=1)
    decisions = by_id(plan([old, backup(NOW, serial=2)]))
    assert decisions[old.backup_id] == ("keep", (), f"archive copy under Object Lock until {until}")


def test_archived_monthly_backups_are_only_kept() -> None:
    archived = ArchiveCopy(bucket="archive", archived_at=iso(NOW))
    month = backup(datetime(2026, 10, 1, 0, 5, tzinfo=UTC), archive=archived, serial=1)
    unarchived = backup(datetime(2026, 11, 1, 0, 5, tzinfo=UTC), serial=2)
    decisions = by_id(plan([month, unarchived]))
    assert decisions[month.backup_id][0] == "keep"
    assert decisions[unarchived.backup_id][0] == "archive"
    assert by_id(plan([unarchived], archive_enabled=False))[unarchived.backup_id][0] == "keep"


def test_started_at_in_another_spelling_is_understood() -> None:
    record = backup(NOW - timedelta(days=1), serial=1).model_copy(
        update={"started_at": "2026-11-21T18:30:00+00:00"}
    )
    decisions = by_id(plan([record, backup(NOW, serial=2)]))
    assert "daily 2026-11-21" in decisions[record.backup_id][1]


def test_an_empty_catalog_plans_nothing() -> None:
    result = plan([backup(NOW, "failed", serial=1)])
    assert result.decisions == []
    assert result.counts == {"keep": 0, "archive": 0, "expire": 0, "expire_primary": 0, "ignored": 1}


# properties ---------------------------------------------------------------------------

catalogs = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=90 * 24 * 60),  # minutes before NOW
        st.sampled_from(["completed", "completed", "completed", "failed", "expired"]),
    ),
    min_size=1,
    max_size=120,
    unique_by=lambda row: row[0],
)
retentions = st.builds(
    RetentionConfig,
    hourly=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3)),
    daily=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=20)),
    weekly=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=60)),
    monthly=st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=120)),
)
rpos = st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=12))


def build(rows: list[tuple[int, str]]) -> list[BackupRecord]:
    return [backup(NOW - timedelta(minutes=m), status, serial=n) for n, (m, status) in enumerate(rows)]


def apply(records: list[BackupRecord], result: RetentionPlan) -> list[BackupRecord]:
    """What the archive run does to the catalog when every action succeeds."""
    actions = {d.backup_id: d.action for d in result.decisions}
    applied = []
    for record in records:
        action = actions.get(record.backup_id)
        if action == "expire":
            applied.append(record.model_copy(update={"status": "expired"}))
        elif action == "archive":
            applied.append(
                record.model_copy(update={"archive": ArchiveCopy(bucket="archive", archived_at=iso(NOW))})
            )
        else:
            applied.append(record)
    return applied


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(catalogs, retentions, rpos, st.data())
def test_properties_of_a_plan(
    rows: list[tuple[int, str]], retention: RetentionConfig, rpo: timedelta, data: st.DataObject
) -> None:
    records = build(rows)
    completed = [r for r in records if r.status == "completed"]
    verified = data.draw(st.sets(st.sampled_from([r.backup_id for r in records])))
    result = plan(records, retention=retention, rpo=rpo, verified_success=verified)
    decisions = by_id(result)

    # only completed backups are planned, each once
    assert set(decisions) == {r.backup_id for r in completed}
    if completed:
        # the newest completed backup is always kept
        newest = max(completed, key=lambda r: (r.started_at, r.backup_id))
        assert decisions[newest.backup_id][0] != "expire"
    # the newest backup that verified success is always kept
    verified_completed = [r for r in completed if r.backup_id in verified]
    if verified_completed:
        newest_verified = max(verified_completed, key=lambda r: (r.started_at, r.backup_id))
        assert decisions[newest_verified.backup_id][0] != "expire"
    # nothing younger than the RPO expires
    for record in completed:
        if NOW - record.started < rpo:
            assert decisions[record.backup_id][0] != "expire"
    # an expired backup fills no slot and says why
    for action, slots, reason in decisions.values():
        if action == "expire":
            assert slots == () and reason

    # applying the plan and planning again changes nothing more
    again = plan(apply(records, result), retention=retention, rpo=rpo, verified_success=verified)
    assert again.with_action("expire") == []
    assert again.with_action("archive") == []
    kept_before = {d.backup_id: d.slots for d in result.decisions if d.action != "expire"}
    assert {d.backup_id: d.slots for d in again.decisions} == kept_before


@settings(max_examples=100, deadline=None)
@given(catalogs, retentions, st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=30)))
def test_later_plans_never_bring_back_what_expired(
    rows: list[tuple[int, str]], retention: RetentionConfig, later: timedelta
) -> None:
    # Given a plan applied now, when planning again later, the slots are held by the same
    # backups as if nothing had been expired: no slot ever needed a backup already deleted.
    records = build(rows)
    applied = apply(records, plan(records, retention=retention))
    after_expiry = plan(applied, retention=retention, now=NOW + later)
    untouched = plan(records, retention=retention, now=NOW + later)
    assert {d.backup_id: d.slots for d in after_expiry.decisions if d.slots} == {
        d.backup_id: d.slots for d in untouched.decisions if d.slots
    }


@pytest.mark.parametrize("status", ["failed", "expired"])
def test_records_without_an_object_are_ignored(status: str) -> None:
    result = plan([backup(NOW - timedelta(days=100), status, serial=1), backup(NOW, serial=2)])
    assert result.counts["ignored"] == 1
