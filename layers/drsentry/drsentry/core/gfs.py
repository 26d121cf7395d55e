"""Grandfather-father-son slots: which tier a backup fills.

The first completed backup of a month is ``monthly``, of an ISO week ``weekly``, of a
day ``daily``, otherwise ``hourly`` (UTC). Because backups complete in time order, the
first completed backup of a slot is the one whose predecessor lies in an earlier slot,
so a failed first attempt hands its slot to the next completed backup.

`plan_retention` applies the same slots at archive time: which backups are kept,
copied to the archive, or expired (see the comment above it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, NamedTuple

from drsentry.core.config import RetentionConfig, format_duration
from drsentry.core.records import BackupRecord, Tier, iso, parse_iso


def assign_tier(started_at: datetime, previous_completed: datetime | None) -> Tier:
    """Tier of a backup started at `started_at`, given the newest completed one before it."""
    current = started_at.astimezone(UTC)
    if previous_completed is None:
        return "monthly"
    # A clock running ahead on another host can make the previous backup look newer; that
    # must never lose a finished dump, so it counts as the same slot.
    previous = min(previous_completed.astimezone(UTC), current)
    if (previous.year, previous.month) != (current.year, current.month):
        return "monthly"
    if previous.isocalendar()[:2] != current.isocalendar()[:2]:
        return "weekly"
    if previous.date() != current.date():
        return "daily"
    return "hourly"


# Retention: which backups still fill a slot -----------------------------------------
#
# At archive time the same slots decide what is kept. A backup fills the slot of its hour,
# day, ISO week or month when it is the first completed backup of that period and the
# period began less than `retention.<tier>` ago. The window is measured from the start of
# the period, not from the backup: when a slot's first backup goes, the whole period has
# left its window, so no later backup of it can inherit the slot, and a run right after a
# run finds nothing new to expire. A backup can fill several slots; one that fills none is
# expired unless it is protected: the newest completed backup, the newest backup that
# verified `success`, and everything younger than the RPO are never expired, whatever the
# windows say. Nor is a backup whose archive copy is still under Object Lock: S3 would
# refuse the delete anyway.
#
# Slot keys are cut from the records' `started_at` text (ISO 8601 UTC, second precision),
# which keeps planning 100,000 rows well under a second: only the ISO week needs a date,
# and there are at most a few thousand distinct days.

TIERS_BY_RANK: tuple[Tier, ...] = ("monthly", "weekly", "daily", "hourly")
# expire_primary: a monthly backup whose verified archive copy serves its slot alone loses its
# primary and replica copies (the record stays `completed`; restores read the archive copy).
Action = Literal["keep", "archive", "expire", "expire_primary"]


def slot_key(tier: Tier, started_at: datetime) -> str:
    """`2026-11`, `2026-W47`, `2026-11-22` or `2026-11-22T18`: the slot a moment falls in (UTC)."""
    moment = started_at.astimezone(UTC)
    if tier == "monthly":
        return f"{moment:%Y-%m}"
    if tier == "weekly":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    if tier == "daily":
        return f"{moment:%Y-%m-%d}"
    return f"{moment:%Y-%m-%dT%H}"


def _second_precision(started_at: str) -> str:
    """`started_at` as the catalog writes it (`2026-11-22T18:00:00Z`), whatever its spelling."""
    if len(started_at) == 20 and started_at[10] == "T" and started_at[19] == "Z":
        return started_at
    return iso(parse_iso(started_at))


def is_archived(record: BackupRecord) -> bool:
    """The archive copy was made and verified, and has not been deleted since."""
    archive = record.archive
    return archive is not None and bool(archive.archived_at) and not archive.deleted_at


class RetentionDecision(NamedTuple):
    backup_id: str
    started_at: str
    action: Action
    # e.g. ("monthly 2026-11", "daily 2026-11-01", "hourly 2026-11-01T00")
    slots: tuple[str, ...]
    # Why a backup without a slot is kept, or why one is expired; empty when slots say it all.
    reason: str = ""

    def as_row(self) -> dict[str, Any]:
        return {
            "backup_id": self.backup_id,
            "started_at": self.started_at,
            "action": self.action,
            "slots": list(self.slots),
            "reason": self.reason,
        }


@dataclass(frozen=True)
class RetentionPlan:
    planned_at: str
    # Completed backups only, newest first.
    decisions: list[RetentionDecision]
    # Failed and expired records: they hold no slot and have nothing left to delete.
    ignored: int = 0

    def with_action(self, action: Action) -> list[RetentionDecision]:
        return [decision for decision in self.decisions if decision.action == action]

    @property
    def counts(self) -> dict[str, int]:
        counts = {"keep": 0, "archive": 0, "expire": 0, "expire_primary": 0}
        for decision in self.decisions:
            counts[decision.action] += 1
        return {**counts, "ignored": self.ignored}

    def slot_counts(self) -> dict[Tier, int]:
        """How many slots of each tier are filled (a backup may count in several)."""
        counts: dict[Tier, int] = dict.fromkeys(TIERS_BY_RANK, 0)
        for decision in self.decisions:
            for slot in decision.slots:
                counts[slot.split(" ", 1)[0]] += 1  # type: ignore[index]
        return counts


def plan_retention(
    backups: Sequence[BackupRecord],
    *,
    now: datetime,
    retention: RetentionConfig,
    rpo: timedelta,
    verified_success: Collection[str] = (),
    archive_enabled: bool = True,
) -> RetentionPlan:
    """Decide keep / archive / expire for every completed backup of one target.

    Pure: reads nothing but its arguments. `verified_success` holds the ids of backups with
    a `success` verification. `archive` means: fills a monthly slot and has no verified
    archive copy yet (it is kept as well).
    """
    windows = {tier: getattr(retention, tier) for tier in TIERS_BY_RANK}
    cutoffs = {tier: iso(now - window) for tier, window in windows.items()}
    window_text = {tier: format_duration(window) for tier, window in windows.items()}

    completed = [record for record in backups if record.status == "completed"]
    ignored = len(backups) - len(completed)
    # Sorting the records themselves (not (key, record) tuples) keeps 100,000 rows from
    # leaving 100,000 extra containers for the garbage collector to walk.
    completed.sort(key=lambda record: (_second_precision(record.started_at), record.backup_id))
    protection = _Protection.of(completed, verified_success, now=now, rpo=rpo)

    periods = _FirstOfPeriod()
    decisions: list[RetentionDecision] = []
    for record in completed:
        started = _second_precision(record.started_at)
        backup_id = record.backup_id
        first = periods.begun_by(started)
        held = (
            tuple(f"{tier} {key}" for tier, key, begins in first if begins > cutoffs[tier]) if first else ()
        )
        if held:
            decisions.append(_held(record, started, held, protection, archive_enabled=archive_enabled))
            continue
        reason = protection.reason(record, started)
        if reason:
            decisions.append(RetentionDecision(backup_id, started, "keep", (), reason))
        else:
            decisions.append(
                RetentionDecision(
                    backup_id, started, "expire", (), _expiry_reason(first, started, window_text)
                )
            )

    decisions.reverse()
    return RetentionPlan(planned_at=iso(now), decisions=decisions, ignored=ignored)


def _held(
    record: BackupRecord,
    started: str,
    held: tuple[str, ...],
    protection: _Protection,
    *,
    archive_enabled: bool,
) -> RetentionDecision:
    """The decision for a backup that fills at least one slot."""
    monthly = archive_enabled and held[0].startswith("monthly ")
    if monthly and not is_archived(record):
        return RetentionDecision(record.backup_id, started, "archive", held)
    if monthly and len(held) == 1 and not record.primary_expired_at and not protection.keeps(record, started):
        reason = f"the archive copy serves {held[0]} alone"
        return RetentionDecision(record.backup_id, started, "expire_primary", held, reason)
    return RetentionDecision(record.backup_id, started, "keep", held)


# (tier, slot key, start of the period as catalog text)
PeriodStart = tuple[Tier, str, str]


class _FirstOfPeriod:
    """Which periods each backup, fed in time order, is the first completed backup of.

    The hot loop: plain sets and string slices of `started_at`, no per-row dicts. A new hour is
    the only place a new day can start, and a new day the only place a new week or month can,
    so the ISO week is computed once per day.
    """

    def __init__(self) -> None:
        self._months: set[str] = set()
        self._weeks: set[str] = set()
        self._days: set[str] = set()
        self._hours: set[str] = set()

    def begun_by(self, started: str) -> list[PeriodStart]:
        """The periods (longest first) whose first completed backup started at `started`;
        empty when its hour already has one."""
        hour = started[:13]
        if hour in self._hours:
            return []
        self._hours.add(hour)
        this_hour: PeriodStart = ("hourly", hour, f"{hour}:00:00Z")
        day = started[:10]
        if day in self._days:
            return [this_hour]
        self._days.add(day)
        first: list[PeriodStart] = []
        month = started[:7]
        if month not in self._months:
            self._months.add(month)
            first.append(("monthly", month, f"{month}-01T00:00:00Z"))
        week, week_start = _iso_week(day)
        if week not in self._weeks:
            self._weeks.add(week)
            first.append(("weekly", week, week_start))
        first.append(("daily", day, f"{day}T00:00:00Z"))
        first.append(this_hour)
        return first


def _iso_week(day: str) -> tuple[str, str]:
    """`2026-W47` and the start of its Monday, for a day `2026-11-22`."""
    moment = date.fromisoformat(day)
    year, number, weekday = moment.isocalendar()
    monday = moment - timedelta(days=weekday - 1)
    return f"{year}-W{number:02d}", f"{monday.isoformat()}T00:00:00Z"


@dataclass(frozen=True)
class _Protection:
    """Why a backup that fills no slot is kept all the same."""

    by_id: dict[str, str]  # the newest completed backup, the newest that verified success
    rpo_cutoff: str
    rpo_reason: str
    now_text: str

    @classmethod
    def of(
        cls,
        completed: Sequence[BackupRecord],
        verified_success: Collection[str],
        *,
        now: datetime,
        rpo: timedelta,
    ) -> _Protection:
        """`completed` oldest first."""
        by_id: dict[str, str] = {}
        if completed:
            by_id[completed[-1].backup_id] = "newest completed backup"
        newest_verified = next(
            (record.backup_id for record in reversed(completed) if record.backup_id in verified_success), None
        )
        if newest_verified is not None:
            by_id.setdefault(newest_verified, "newest backup that verified success")
        return cls(by_id, iso(now - rpo), f"younger than the RPO ({format_duration(rpo)})", iso(now))

    def keeps(self, record: BackupRecord, started: str) -> str:
        """Why `record`'s primary copy must stay whatever its slots say: newest, newest verified,
        younger than the RPO; empty when none of these."""
        return self.by_id.get(record.backup_id) or (self.rpo_reason if started > self.rpo_cutoff else "")

    def reason(self, record: BackupRecord, started: str) -> str:
        """Why `record` (started at `started`, catalog text) is kept; empty when nothing protects it."""
        return self.by_id.get(record.backup_id) or (
            self.rpo_reason if started > self.rpo_cutoff else _lock_reason(record, self.now_text)
        )


def _expiry_reason(first: list[PeriodStart], started: str, window_text: dict[Tier, str]) -> str:
    if first:
        tier, key, _ = first[0]
        return f"{tier} slot {key} is older than {window_text[tier]}"
    return f"not the first completed backup of hour {started[:13]}"


def _lock_reason(record: BackupRecord, now_text: str) -> str:
    """A locked archive copy cannot be deleted before its date, so the backup stays whole
    until then instead of failing its expiry every day."""
    if record.archive is None or not is_archived(record):
        return ""
    retain_until = record.archive.retain_until
    if retain_until and _second_precision(retain_until) > now_text:
        return f"archive copy under Object Lock until {retain_until}"
    return ""


# Object Lock: how long a backup's primary copy is locked -----------------------------------
#
# A slot ends when its period leaves the retention window: the start of the period plus
# `retention.<tier>`, the rule `plan_retention` applies. The primary copy (and its replica) is
# locked until the latest end among the slots it serves. The monthly slot is the archive copy's
# to serve when archiving is on (that copy carries its own lock), so a monthly backup's primary
# copy can go with its shorter slots instead of being paid for twice for years. Every completed
# backup is locked at least until its hour's slot ends: at completion it is the newest backup,
# the one a recovery after an attack needs most.


def period_start(tier: Tier, moment: datetime) -> datetime:
    """The start (UTC) of the hour, day, ISO week or month `moment` falls in."""
    moment = moment.astimezone(UTC)
    hour = moment.replace(minute=0, second=0, microsecond=0)
    if tier == "hourly":
        return hour
    day = hour.replace(hour=0)
    if tier == "daily":
        return day
    if tier == "weekly":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def first_of(started_at: datetime, previous_completed: datetime | None) -> tuple[Tier, ...]:
    """The tiers whose period a backup started at `started_at` is the first completed backup of,
    longest first (`assign_tier`'s rule, for every tier at once)."""
    if previous_completed is None:
        return TIERS_BY_RANK
    current = started_at.astimezone(UTC)
    previous = min(previous_completed.astimezone(UTC), current)
    return tuple(tier for tier in TIERS_BY_RANK if slot_key(tier, previous) != slot_key(tier, current))


def primary_retain_until(
    started_at: datetime, tiers: Collection[Tier], retention: RetentionConfig, *, archive_enabled: bool
) -> datetime:
    """The end of the longest slot among `tiers` that the primary copy serves, and never before
    the end of the backup's hour slot."""
    served = [tier for tier in tiers if not (archive_enabled and tier == "monthly")]
    ends = [period_start(tier, started_at) + getattr(retention, tier) for tier in {*served, "hourly"}]
    return max(ends)


def slot_tier_start(slot: str) -> tuple[Tier, datetime]:
    """A plan's slot label (`weekly 2026-W47`, `hourly 2026-11-22T18` ...) as its tier and start."""
    tier, key = slot.split(" ", 1)
    if tier == "monthly":
        start = datetime.strptime(key, "%Y-%m")
    elif tier == "weekly":
        year, week = key.split("-W")
        start = datetime.combine(date.fromisocalendar(int(year), int(week), 1), datetime.min.time())
    elif tier == "daily":
        start = datetime.strptime(key, "%Y-%m-%d")
    elif tier == "hourly":
        start = datetime.strptime(key, "%Y-%m-%dT%H")
    else:
        raise ValueError(f"not a retention slot: {slot!r}")
    return tier, start.replace(tzinfo=UTC)  # type: ignore[return-value]


def planned_retain_until(
    decision: RetentionDecision, retention: RetentionConfig, *, archive_enabled: bool
) -> datetime | None:
    """Where the plan says the primary copy's lock should end: the latest end of the slots it
    fills that the primary copy serves; None when it fills none of those."""
    ends = [
        start + getattr(retention, tier)
        for tier, start in map(slot_tier_start, decision.slots)
        if not (archive_enabled and tier == "monthly")
    ]
    return max(ends) if ends else None
