"""Grandfather-father-son slots: which tier a backup fills.

The first completed backup of a month is ``monthly``, of an ISO week ``weekly``, of a
day ``daily``, otherwise ``hourly`` (UTC). Because backups complete in time order, the
first completed backup of a slot is the one whose predecessor lies in an earlier slot,
so a failed first attempt hands its slot to the next completed backup.
"""

from __future__ import annotations

from datetime import UTC, datetime

from drsentry.records import Tier


def assign_tier(started_at: datetime, previous_completed: datetime | None) -> Tier:
    """Tier of a backup started at `started_at`, given the newest completed one before it."""
    current = started_at.astimezone(UTC)
    if previous_completed is None:
        return "monthly"
    previous = previous_completed.astimezone(UTC)
    if previous > current:
        raise ValueError("previous completed backup is newer than the one being assigned")
    if (previous.year, previous.month) != (current.year, current.month):
        return "monthly"
    if previous.isocalendar()[:2] != current.isocalendar()[:2]:
        return "weekly"
    if previous.date() != current.date():
        return "daily"
    return "hourly"
