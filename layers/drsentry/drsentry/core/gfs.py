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
Action = Literal["keep", "archive", "expire"]


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
        counts = {"keep": 0, "archive": 0, "expire": 0}
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
    rpo_cutoff = iso(now - rpo)
    now_text = iso(now)

    completed = [record for record in backups if record.status == "completed"]
    ignored = len(backups) - len(completed)
    # Sorting the records themselves (not (key, record) tuples) keeps 100,000 rows from
    # leaving 100,000 extra containers for the garbage collector to walk.
    completed.sort(key=lambda record: (_second_precision(record.started_at), record.backup_id))

    protected: dict[str, str] = {}
    if completed:
        protected[completed[-1].backup_id] = "newest completed backup"
    newest_verified = next(
        (record.backup_id for record in reversed(completed) if record.backup_id in verified_success), None
    )
    if newest_verified is not None:
        protected.setdefault(newest_verified, "newest backup that verified success")
    rpo_reason = f"younger than the RPO ({format_duration(rpo)})"

    # The hot loop: plain locals and set lookups, no per-row dicts.
    seen_month: set[str] = set()
    seen_week: set[str] = set()
    seen_day: set[str] = set()
    seen_hour: set[str] = set()
    weeks: dict[str, tuple[str, str]] = {}
    decisions: list[RetentionDecision] = []
    for record in completed:
        started = _second_precision(record.started_at)
        backup_id = record.backup_id
        hour = started[:13]
        if hour in seen_hour:
            first: list[tuple[Tier, str, str]] = []
        else:
            seen_hour.add(hour)
            day = started[:10]
            month = started[:7]
            cached = weeks.get(day)
            if cached is None:
                moment = date.fromisoformat(day)
                year, number, weekday = moment.isocalendar()
                monday = moment - timedelta(days=weekday - 1)
                cached = weeks[day] = (f"{year}-W{number:02d}", f"{monday.isoformat()}T00:00:00Z")
            week, week_start = cached
            # A new hour is the only place a new day, week or month can start.
            # (tier, slot key, start of the period)
            first = []
            if month not in seen_month:
                seen_month.add(month)
                first.append(("monthly", month, f"{month}-01T00:00:00Z"))
            if week not in seen_week:
                seen_week.add(week)
                first.append(("weekly", week, week_start))
            if day not in seen_day:
                seen_day.add(day)
                first.append(("daily", day, f"{day}T00:00:00Z"))
            first.append(("hourly", hour, f"{hour}:00:00Z"))
            held = tuple(f"{tier} {key}" for tier, key, begins in first if begins > cutoffs[tier])
            if held:
                wants_copy = archive_enabled and held[0].startswith("monthly ") and not is_archived(record)
                decisions.append(
                    RetentionDecision(backup_id, started, "archive" if wants_copy else "keep", held)
                )
                continue

        reason = protected.get(backup_id) or (
            rpo_reason if started > rpo_cutoff else _lock_reason(record, now_text)
        )
        if reason:
            decisions.append(RetentionDecision(backup_id, started, "keep", (), reason))
        elif first:
            tier, key, _ = first[0]
            decisions.append(
                RetentionDecision(
                    backup_id,
                    started,
                    "expire",
                    (),
                    f"{tier} slot {key} is older than {format_duration(windows[tier])}",
                )
            )
        else:
            decisions.append(
                RetentionDecision(
                    backup_id, started, "expire", (), f"not the first completed backup of hour {hour}"
                )
            )

    decisions.reverse()
    return RetentionPlan(planned_at=now_text, decisions=decisions, ignored=ignored)


def _lock_reason(record: BackupRecord, now_text: str) -> str:
    """A locked archive copy cannot be deleted before its date, so the backup stays whole
    until then instead of failing its expiry every day."""
    if record.archive is None or not is_archived(record):
        return ""
    retain_until = record.archive.retain_until
    if retain_until and _second_precision(retain_until) > now_text:
        return f"archive copy under Object Lock until {retain_until}"
    return ""
