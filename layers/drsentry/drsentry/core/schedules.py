"""EventBridge Scheduler expressions, checked when drsentry.yaml is parsed, and the stack's defaults.

EventBridge Scheduler accepts three forms and refuses anything else only when a schedule is
created, which for drsentry is the reconciler long after the config was saved. So the config
checks them as Scheduler does, and a wrong one is a one-line config error naming the field:

- ``rate(N unit)``: N a positive whole number, unit minute(s) / hour(s) / day(s), singular
  exactly when N is 1 (Scheduler refuses ``rate(1 minutes)`` and ``rate(5 minute)``);
- ``cron(minutes hours day-of-month month day-of-week year)``: six fields; exactly one of
  day-of-month and day-of-week is ``?`` (Scheduler cannot honour both, and needs one);
  ``L``, ``W`` and ``#`` only where Scheduler allows them;
- ``at(yyyy-mm-ddThh:mm:ss)``: a one-time schedule, a real date and time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict

Job = Literal["backup", "verify", "replication-check", "archive"]
JOBS: tuple[Job, ...] = ("backup", "verify", "replication-check", "archive")

_RATE_RE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_AT_RE = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_CRON_RE = re.compile(r"^cron\((.*)\)$")
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_WEEKDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]


class _Field:
    """One cron field: its name, the numbers it takes, and the names that stand for numbers."""

    def __init__(self, name: str, low: int, high: int, names: list[str] | None = None) -> None:
        self.name, self.low, self.high = name, low, high
        self.names = {label: low + index for index, label in enumerate(names or [])}

    def number(self, text: str) -> int:
        value = self.names.get(text.upper()) if not text.isdigit() else int(text)
        if value is None or not self.low <= value <= self.high:
            raise ValueError(f"{self.name} {text!r} is not in {self.low}-{self.high}")
        return value

    def check_item(self, item: str) -> None:
        """`*`, `5`, `1-5`, `*/15`, `10/5`, `MON-FRI` (L, W and # are the day fields' own)."""
        base, _, step = item.partition("/")
        if step and not (step.isdigit() and int(step) > 0):
            raise ValueError(f"{self.name} step {step!r} must be a positive number")
        if base == "*":
            return
        first, _, last = base.partition("-")
        self.number(first)
        if last:
            self.number(last)


_MINUTES = _Field("minutes", 0, 59)
_HOURS = _Field("hours", 0, 23)
_DAY_OF_MONTH = _Field("day-of-month", 1, 31)
_MONTH = _Field("month", 1, 12, _MONTHS)
_DAY_OF_WEEK = _Field("day-of-week", 1, 7, _WEEKDAYS)
_YEAR = _Field("year", 1970, 2199)


def _check_field(field: _Field, text: str) -> None:
    for item in text.split(","):
        if not item:
            raise ValueError(f"{field.name} {text!r} has an empty list item")
        if field is _DAY_OF_MONTH and (item in ("L", "LW") or re.fullmatch(r"\d{1,2}W", item)):
            if item.endswith("W") and item != "LW":
                field.number(item[:-1])
            continue
        if field is _DAY_OF_WEEK and item == "L":
            continue
        if field is _DAY_OF_WEEK and (match := re.fullmatch(r"(\w+)(L|#([1-5]))", item)):
            field.number(match.group(1))
            continue
        field.check_item(item)


def _check_cron(body: str) -> None:
    fields = body.split()
    if len(fields) != 6:
        raise ValueError(
            f"cron needs six fields (minutes hours day-of-month month day-of-week year), got {len(fields)}"
        )
    minutes, hours, day_of_month, month, day_of_week, year = fields
    if (day_of_month == "?") == (day_of_week == "?"):
        raise ValueError("cron: exactly one of day-of-month and day-of-week must be '?'")
    for field, text in ((_MINUTES, minutes), (_HOURS, hours), (_MONTH, month), (_YEAR, year)):
        _check_field(field, text)
    for field, text in ((_DAY_OF_MONTH, day_of_month), (_DAY_OF_WEEK, day_of_week)):
        if text != "?":
            _check_field(field, text)


def check_schedule_expression(expression: str) -> str:
    """`expression` unchanged when EventBridge Scheduler accepts it; ValueError saying why not."""
    text = expression.strip()
    if text.startswith("rate("):
        rate = _RATE_RE.match(text)
        if rate is None:
            raise ValueError(f"invalid rate expression {expression!r} (write e.g. rate(5 minutes))")
        value, unit = int(rate.group(1)), rate.group(2)
        if value < 1:
            raise ValueError(f"invalid rate expression {expression!r}: the value must be at least 1")
        if (value == 1) == unit.endswith("s"):
            wanted = unit.rstrip("s") if value == 1 else f"{unit}s"
            raise ValueError(f"invalid rate expression {expression!r}: write rate({value} {wanted})")
        return text
    if text.startswith("cron("):
        cron = _CRON_RE.match(text)
        if cron is None:
            raise ValueError(f"invalid cron expression {expression!r} (write e.g. cron(0 * * * ? *))")
        try:
            _check_cron(cron.group(1))
        except ValueError as exc:
            raise ValueError(f"invalid cron expression {expression!r}: {exc}") from exc
        return text
    if text.startswith("at("):
        at = _AT_RE.match(text)
        try:
            datetime.strptime(at.group(1) if at else "", "%Y-%m-%dT%H:%M:%S")
        except ValueError as exc:
            raise ValueError(
                f"invalid at expression {expression!r} (write e.g. at(2026-12-24T18:00:00))"
            ) from exc
        return text
    raise ValueError(f"invalid schedule expression {expression!r} (write rate(...), cron(...) or at(...))")


def _expression(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"schedule expression must be text, got {type(value).__name__}")
    return check_schedule_expression(value)


ScheduleExpression = Annotated[str, AfterValidator(_expression)]


class SchedulesConfig(BaseModel):
    """The stack's schedules: every target's, unless the target sets its own (the template's
    parameters write these into the starter config)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backup: ScheduleExpression = "cron(0 * * * ? *)"
    verify: ScheduleExpression = "cron(30 * * * ? *)"
    replication_check: ScheduleExpression = "cron(45 * * * ? *)"
    archive: ScheduleExpression = "cron(15 3 * * ? *)"
    timezone: str = "UTC"
    # false pauses every schedule (they stay in the group, DISABLED); the functions stay deployed.
    enabled: bool = True

    def default_for(self, job: Job) -> str:
        return str(getattr(self, job.replace("-", "_")))


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule in the stack's group, as drsentry writes it and as the reconciler reads it back."""

    name: str
    expression: str
    timezone: str
    enabled: bool
    function_arn: str
    role_arn: str
    # The EventBridge-shaped event the function receives (JSON); detail names the target.
    input: str
    dead_letter_arn: str | None = None
    retry_attempts: int = 3
    max_event_age_seconds: int = 3600
    description: str = ""

    def differences(self, other: ScheduleSpec) -> list[str]:
        """The fields where `other` differs (the inputs compared as JSON, not as text)."""
        changed = [
            name
            for name in (
                "expression",
                "timezone",
                "enabled",
                "function_arn",
                "role_arn",
                "dead_letter_arn",
                "retry_attempts",
                "max_event_age_seconds",
                "description",
            )
            if getattr(self, name) != getattr(other, name)
        ]
        if _json_or_text(self.input) != _json_or_text(other.input):
            changed.append("input")
        return changed


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
