"""`drsentry schedules sync`: the stack's EventBridge Scheduler group made to match drsentry.yaml."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from drsentry.operator.cli.app import (
    ConfigOption,
    JsonOption,
    _config,
    cli_errors,
    print_json,
    schedules_app,
    stdout,
)


@schedules_app.command("sync")
@cli_errors
def sync(
    config: ConfigOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: JsonOption = False,
) -> None:
    """One schedule per target and job in the stack's group: create what is missing, update what
    differs, delete what the config no longer names.

    The group, the functions and the role come from DRSENTRY_SCHEDULE_GROUP,
    DRSENTRY_SCHEDULER_ROLE_ARN, DRSENTRY_{BACKUP,VERIFY,REPLICATION_CHECK,ARCHIVE}_FUNCTION_ARN
    (and DRSENTRY_SCHEDULE_DEAD_LETTER_ARN): the stack's outputs.
    Example: drsentry schedules sync --dry-run
    """
    from drsentry.adapters.aws import AwsClients
    from drsentry.jobs.schedules.job import plan_document, sync_schedules
    from drsentry.jobs.schedules.rules import Deployment

    loaded = _config(config)
    deployment = Deployment.from_environment(os.environ)
    plan = sync_schedules(loaded, AwsClients(loaded.storage.region), deployment, dry_run=dry_run)
    if as_json:
        print_json(plan_document(plan, deployment.group, dry_run=dry_run))
        return
    verb = "would " if dry_run else ""
    for schedule in plan.create:
        stdout.print(f"[green]{verb}create[/] {schedule.name}  {schedule.expression}", highlight=False)
    for update in plan.update:
        changed = ", ".join(update.changes)
        stdout.print(
            f"[yellow]{verb}update[/] {update.schedule.name}  {update.schedule.expression} ({changed})",
            highlight=False,
        )
    for name in plan.delete:
        stdout.print(f"[red]{verb}delete[/] {name}", highlight=False)
    stdout.print(
        f"{deployment.group}: {len(plan.create)} to create, {len(plan.update)} to update, "
        f"{len(plan.delete)} to delete, {len(plan.unchanged)} unchanged"
        + (" (dry run: nothing changed)" if dry_run else ""),
        highlight=False,
    )
