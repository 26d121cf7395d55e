"""The stack's EventBridge Scheduler schedule group: its schedules read, created, replaced, deleted.

Every schedule in the group is drsentry's (the stack owns the group), so the reconciler may
delete what the config no longer names. ListSchedules gives names only: each schedule is read
with GetSchedule to compare it. UpdateSchedule replaces the whole schedule (a field left out
is reset), so an update sends every field, as a create does. A Scheduler error becomes
SchedulerError with one line naming the group and the schedule.
"""

from __future__ import annotations

from typing import Any

from drsentry.adapters.aws_errors import AWS_ERRORS, describe, is_not_found
from drsentry.core.errors import SchedulerError
from drsentry.core.schedules import ScheduleSpec


class ScheduleGroup:
    """One schedule group, by name, through a boto3 `scheduler` client."""

    def __init__(self, scheduler: Any, name: str) -> None:
        self.scheduler = scheduler
        self.name = name

    def schedules(self) -> list[ScheduleSpec]:
        """Every schedule in the group, read in full, by name."""
        try:
            names: list[str] = []
            for page in self.scheduler.get_paginator("list_schedules").paginate(GroupName=self.name):
                names.extend(summary["Name"] for summary in page.get("Schedules", []))
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                raise SchedulerError(
                    f"schedule group {self.name!r} does not exist (deploy the stack first, "
                    "or set DRSENTRY_SCHEDULE_GROUP to the stack's ScheduleGroupName output)"
                ) from exc
            raise SchedulerError(
                f"cannot list the schedules of group {self.name!r}: {describe(exc)}"
            ) from exc
        return [self._read(name) for name in sorted(names)]

    def _read(self, name: str) -> ScheduleSpec:
        try:
            found = self.scheduler.get_schedule(GroupName=self.name, Name=name)
        except AWS_ERRORS as exc:
            raise SchedulerError(f"cannot read schedule {self.name}/{name}: {describe(exc)}") from exc
        target = found.get("Target", {})
        retry = target.get("RetryPolicy", {})
        return ScheduleSpec(
            name=name,
            expression=found.get("ScheduleExpression", ""),
            timezone=found.get("ScheduleExpressionTimezone") or "UTC",
            enabled=found.get("State", "ENABLED") == "ENABLED",
            function_arn=target.get("Arn", ""),
            role_arn=target.get("RoleArn", ""),
            input=target.get("Input", ""),
            dead_letter_arn=target.get("DeadLetterConfig", {}).get("Arn"),
            retry_attempts=retry.get("MaximumRetryAttempts", 185),
            max_event_age_seconds=retry.get("MaximumEventAgeInSeconds", 86400),
            description=found.get("Description") or "",
        )

    def create(self, schedule: ScheduleSpec) -> None:
        self._write("create_schedule", "create", schedule)

    def replace(self, schedule: ScheduleSpec) -> None:
        self._write("update_schedule", "update", schedule)

    def delete(self, name: str) -> None:
        try:
            self.scheduler.delete_schedule(GroupName=self.name, Name=name)
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                return  # already gone: what the delete wanted
            raise SchedulerError(f"cannot delete schedule {self.name}/{name}: {describe(exc)}") from exc

    def _write(self, call: str, verb: str, schedule: ScheduleSpec) -> None:
        target: dict[str, Any] = {
            "Arn": schedule.function_arn,
            "RoleArn": schedule.role_arn,
            "Input": schedule.input,
            "RetryPolicy": {
                "MaximumRetryAttempts": schedule.retry_attempts,
                "MaximumEventAgeInSeconds": schedule.max_event_age_seconds,
            },
        }
        if schedule.dead_letter_arn:
            target["DeadLetterConfig"] = {"Arn": schedule.dead_letter_arn}
        try:
            getattr(self.scheduler, call)(
                GroupName=self.name,
                Name=schedule.name,
                ScheduleExpression=schedule.expression,
                ScheduleExpressionTimezone=schedule.timezone,
                State="ENABLED" if schedule.enabled else "DISABLED",
                Description=schedule.description,
                # Off: a backup runs at the time the config says, not somewhere in a window.
                FlexibleTimeWindow={"Mode": "OFF"},
                Target=target,
            )
        except AWS_ERRORS as exc:
            raise SchedulerError(
                f"cannot {verb} schedule {self.name}/{schedule.name}: {describe(exc)}"
            ) from exc
