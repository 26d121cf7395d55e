"""The alert state and the decision what Slack hears about a run, and the SNS subject.

Pure: no clock, no I/O (the rules are step 4 of the route in the package docstring).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from drsentry.core.records import Severity, iso, parse_iso

if TYPE_CHECKING:
    from drsentry.core.records import RunNotice

_SUBJECT_LIMIT = 99  # SNS: ASCII, no line breaks, under 100 characters

Decision = Literal["alert", "remind", "suppress", "recover", "quiet"]


class AlertState(BaseModel):
    """What Slack was last told about one source and target."""

    severity: Severity
    status: str
    failing_checks: list[str]
    since: str  # when Slack was first told about this failure (or the recovery)
    last_slack_at: str

    def is_problem(self) -> bool:
        return self.severity != "info"


def failing_check_set(names: Iterable[Any] | None) -> list[str]:
    """Sorted, de-duplicated check names: the order checks ran in must not make a new failure."""
    return sorted({str(name) for name in names or [] if str(name)})


def decide(
    previous: AlertState | None,
    *,
    severity: Severity,
    status: str,
    failing_checks: list[str],
    now: datetime,
    repeat_after: timedelta,
) -> Decision:
    """Whether this run's outcome goes to Slack, and as what. Pure: no clock, no I/O.

    - a failure or warning not told before (or different from the last one): ``alert``;
    - the same one again: ``remind`` once ``repeat_after`` has passed, else ``suppress``;
    - the first success after a failure or warning: ``recover``; other successes: ``quiet``.
    """
    if severity == "info":
        return "recover" if previous is not None and previous.is_problem() else "quiet"
    if previous is None or not previous.is_problem():
        return "alert"
    same_failure = (previous.severity, previous.status, previous.failing_checks) == (
        severity,
        status,
        failing_check_set(failing_checks),
    )
    if not same_failure:
        return "alert"
    if now - parse_iso(previous.last_slack_at) >= repeat_after:
        return "remind"
    return "suppress"


def next_state(
    previous: AlertState | None,
    decision: Decision,
    *,
    severity: Severity,
    status: str,
    failing_checks: list[str],
    now: datetime,
) -> AlertState | None:
    """The state to store after Slack took the message; None when nothing changes."""
    if decision in {"suppress", "quiet"}:
        return None
    since = previous.since if decision == "remind" and previous is not None else iso(now)
    return AlertState(
        severity=severity,
        status=status,
        failing_checks=failing_check_set(failing_checks) if decision != "recover" else [],
        since=since,
        last_slack_at=iso(now),
    )


def _ascii_line(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]+", " ", text).strip()


def sns_subject(notice: RunNotice) -> str:
    return _ascii_line(f"drsentry {notice.severity}: {notice.source} {notice.target} {notice.status}")[
        :_SUBJECT_LIMIT
    ]
