"""`drsentry schedules sync` and the schedules-sync function: read the group, plan, apply.

Deletions go last: a schedule renamed in the config is created before the old one goes, so a
failure half-way never leaves a target without its schedule.
"""

from __future__ import annotations

from typing import Any

from drsentry.adapters.aws import AwsClients
from drsentry.adapters.scheduler import ScheduleGroup
from drsentry.core.config import Config
from drsentry.core.observability import logger
from drsentry.jobs.schedules.rules import Deployment, SyncPlan, desired_schedules, plan_sync


def sync_schedules(
    config: Config, clients: AwsClients, deployment: Deployment, *, dry_run: bool = False
) -> SyncPlan:
    """Make the deployment's schedule group match `config`; the plan (applied unless `dry_run`)."""
    group = ScheduleGroup(clients.client("scheduler"), deployment.group)
    plan = plan_sync(desired_schedules(config, deployment), group.schedules())
    if dry_run:
        return plan
    for schedule in plan.create:
        group.create(schedule)
    for update in plan.update:
        group.replace(update.schedule)
    for name in plan.delete:
        group.delete(name)
    logger.info(
        "schedules synced",
        extra={
            # Not "created": a logging.LogRecord attribute, which `extra` may not overwrite.
            "group": deployment.group,
            "schedules_created": len(plan.create),
            "schedules_updated": len(plan.update),
            "schedules_deleted": len(plan.delete),
            "schedules_unchanged": len(plan.unchanged),
        },
    )
    return plan


def plan_document(plan: SyncPlan, group: str, *, dry_run: bool) -> dict[str, Any]:
    """The JSON of `drsentry schedules sync --json` (and of the function's return value)."""
    return {
        "group": group,
        "dry_run": dry_run,
        "create": [
            {"name": schedule.name, "expression": schedule.expression, "function": schedule.function_arn}
            for schedule in plan.create
        ],
        "update": [
            {
                "name": update.schedule.name,
                "expression": update.schedule.expression,
                "changes": update.changes,
            }
            for update in plan.update
        ],
        "delete": plan.delete,
        "unchanged": plan.unchanged,
    }
