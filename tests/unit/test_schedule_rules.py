"""The reconciler's pure rules: which schedules a config asks for, and the plan that gets there."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from drsentry.core.config import parse_config
from drsentry.core.errors import BadInput
from drsentry.jobs.schedules.rules import (
    FUNCTION_ENV,
    GROUP_ENV,
    MAX_NAME,
    ROLE_ENV,
    Deployment,
    desired_schedules,
    plan_sync,
    schedule_name,
)

DEPLOYMENT = Deployment(
    group="g",
    role_arn="arn:aws:iam::123456789012:role/r",
    function_arns={job: f"arn:aws:lambda:us-east-1:123456789012:function:{job}" for job in FUNCTION_ENV},
)


def config(**extra: object) -> object:
    raw = {
        "storage": {"bucket": "acme-dr-backups", "region": "us-east-1"},
        "targets": [{"name": "app", "dsn": "postgresql://app@db/app"}],
        **extra,
    }
    return parse_config(yaml.safe_dump(raw))


def test_a_target_without_verify_or_replica_gets_backup_and_archive_only() -> None:
    names = [schedule.name for schedule in desired_schedules(config(), DEPLOYMENT)]  # type: ignore[arg-type]
    assert names == ["app.backup", "app.archive"]


def test_a_long_target_name_still_fits_schedulers_limit_and_stays_distinct() -> None:
    long_a, long_b = "a" * 60 + "-one", "a" * 60 + "-two"
    names = {schedule_name(long_a, "replication-check"), schedule_name(long_b, "replication-check")}
    assert len(names) == 2
    assert all(len(name) <= MAX_NAME and name.endswith(".replication-check") for name in names)
    assert schedule_name("app", "backup") == "app.backup"


def test_the_plan_creates_updates_deletes_and_leaves_alone() -> None:
    desired = desired_schedules(config(), DEPLOYMENT)  # type: ignore[arg-type]
    backup, archive = desired
    current = [
        replace(backup, expression="rate(5 minutes)"),
        replace(archive),
        replace(archive, name="old.backup"),
    ]
    current[1] = replace(archive, input=archive.input.replace(",", ", "))  # the same JSON, spaced

    plan = plan_sync(desired, current)

    assert [(update.schedule.name, update.changes) for update in plan.update] == [
        ("app.backup", ["expression"])
    ]
    assert plan.unchanged == ["app.archive"]
    assert plan.delete == ["old.backup"]
    assert plan.create == []
    assert plan_sync(desired, []).create == desired


def test_missing_deployment_variables_are_named_in_one_line() -> None:
    with pytest.raises(BadInput) as error:
        Deployment.from_environment({GROUP_ENV: "g"})
    message = str(error.value)
    assert message.startswith(f"set {ROLE_ENV}, DRSENTRY_BACKUP_FUNCTION_ARN")
    assert "\n" not in message
