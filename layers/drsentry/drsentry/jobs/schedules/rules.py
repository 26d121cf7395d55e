"""What the schedule group should hold, and what to change to get there (pure).

One schedule per target and job, named ``<target>.<job>`` (``app.backup``); verify only for a
target with a `verify` section and replication-check only with a replica, as the jobs refuse
a named target they do not apply to. Each sends the function the EventBridge-shaped event
its handler parses, with the target in the detail, so one run covers exactly that target.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from drsentry.core.config import Config, TargetConfig
from drsentry.core.errors import BadInput
from drsentry.core.events import SCHEDULE_SOURCE
from drsentry.core.schedules import JOBS, Job, ScheduleSpec

# Scheduler's limit on a schedule's name; a long target name is shortened with a hash.
MAX_NAME = 64
# As the template's schedules had: three retries within the hour, then the dead-letter queue.
RETRY_ATTEMPTS = 3
MAX_EVENT_AGE_SECONDS = 3600

GROUP_ENV = "DRSENTRY_SCHEDULE_GROUP"
ROLE_ENV = "DRSENTRY_SCHEDULER_ROLE_ARN"
DEAD_LETTER_ENV = "DRSENTRY_SCHEDULE_DEAD_LETTER_ARN"
FUNCTION_ENV: dict[Job, str] = {
    "backup": "DRSENTRY_BACKUP_FUNCTION_ARN",
    "verify": "DRSENTRY_VERIFY_FUNCTION_ARN",
    "replication-check": "DRSENTRY_REPLICATION_CHECK_FUNCTION_ARN",
    "archive": "DRSENTRY_ARCHIVE_FUNCTION_ARN",
}


@dataclass(frozen=True)
class Deployment:
    """What the stack provides the schedules: its group, its functions, the role Scheduler assumes."""

    group: str
    role_arn: str
    function_arns: Mapping[Job, str]
    dead_letter_arn: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Deployment:
        """From the variables the template gives the schedules-sync function (and an operator
        exports for `drsentry schedules sync`); BadInput naming every one that is missing."""
        needed = [GROUP_ENV, ROLE_ENV, *FUNCTION_ENV.values()]
        missing = [name for name in needed if not environ.get(name)]
        if missing:
            raise BadInput(
                f"set {', '.join(missing)} (the stack's outputs; README: Schedules) to sync schedules"
            )
        return cls(
            group=environ[GROUP_ENV],
            role_arn=environ[ROLE_ENV],
            function_arns={job: environ[variable] for job, variable in FUNCTION_ENV.items()},
            dead_letter_arn=environ.get(DEAD_LETTER_ENV) or None,
        )


def schedule_name(target: str, job: Job) -> str:
    name = f"{target}.{job}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(target.encode()).hexdigest()[:8]
    return f"{target[: MAX_NAME - len(job) - 10]}-{digest}.{job}"


def jobs_of(config: Config, target: TargetConfig) -> list[Job]:
    jobs: list[Job] = []
    for job in JOBS:
        if job == "verify" and target.verify is None:
            continue
        if job == "replication-check" and config.storage.replica is None:
            continue
        jobs.append(job)
    return jobs


def scheduled_input(function_arn: str, target: str) -> str:
    """The event Scheduler delivers: its execution id (the same on a retried delivery) is the
    idempotency key; account and region are the function's."""
    parts = function_arn.split(":")
    region, account = (parts[3], parts[4]) if len(parts) > 4 else ("", "")
    event: dict[str, Any] = {
        "version": "0",
        "id": "<aws.scheduler.execution-id>",
        "detail-type": "Scheduled Event",
        "source": SCHEDULE_SOURCE,
        "account": account,
        "time": "<aws.scheduler.scheduled-time>",
        "region": region,
        "resources": ["<aws.scheduler.schedule-arn>"],
        "detail": {"target": target},
    }
    return json.dumps(event, separators=(",", ":"))


def desired_schedules(config: Config, deployment: Deployment) -> list[ScheduleSpec]:
    schedules = []
    for target in config.targets:
        for job in jobs_of(config, target):
            function_arn = deployment.function_arns[job]
            schedules.append(
                ScheduleSpec(
                    name=schedule_name(target.name, job),
                    expression=config.schedule_of(target, job),
                    timezone=config.schedules.timezone,
                    enabled=config.schedules.enabled,
                    function_arn=function_arn,
                    role_arn=deployment.role_arn,
                    input=scheduled_input(function_arn, target.name),
                    dead_letter_arn=deployment.dead_letter_arn,
                    retry_attempts=RETRY_ATTEMPTS,
                    max_event_age_seconds=MAX_EVENT_AGE_SECONDS,
                    description=f"drsentry {job} of target {target.name}",
                )
            )
    return schedules


@dataclass(frozen=True)
class Update:
    schedule: ScheduleSpec
    changes: list[str]


@dataclass(frozen=True)
class SyncPlan:
    create: list[ScheduleSpec] = field(default_factory=list)
    update: list[Update] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return len(self.create) + len(self.update) + len(self.delete)


def plan_sync(desired: list[ScheduleSpec], current: list[ScheduleSpec]) -> SyncPlan:
    """What makes `current` equal `desired`, exactly: what it lacks, what differs, what is extra."""
    existing = {schedule.name: schedule for schedule in current}
    wanted = {schedule.name for schedule in desired}
    plan = SyncPlan()
    for schedule in desired:
        found = existing.get(schedule.name)
        if found is None:
            plan.create.append(schedule)
        elif changes := schedule.differences(found):
            plan.update.append(Update(schedule, changes))
        else:
            plan.unchanged.append(schedule.name)
    plan.delete.extend(sorted(name for name in existing if name not in wanted))
    return plan
