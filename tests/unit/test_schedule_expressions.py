"""Schedule expressions in drsentry.yaml: what EventBridge Scheduler accepts passes, anything else
is a one-line config error naming the field, when the config is parsed (not when the reconciler
first creates the schedule)."""

from __future__ import annotations

import pytest
import yaml

from drsentry.core.config import parse_config
from drsentry.core.errors import ConfigError
from drsentry.core.schedules import check_schedule_expression

CONFIG = {
    "storage": {"bucket": "acme-dr-backups", "region": "us-east-1"},
    "targets": [{"name": "app", "dsn": "postgresql://app@db/app"}],
}


def config_with(**target_fields: object) -> str:
    raw = yaml.safe_load(yaml.safe_dump(CONFIG))
    raw["targets"][0].update(target_fields)
    return yaml.safe_dump(raw)


@pytest.mark.parametrize(
    "expression",
    [
        "rate(1 minute)",
        "rate(5 minutes)",
        "rate(1 hour)",
        "rate(12 hours)",
        "rate(1 day)",
        "rate(7 days)",
        "cron(0 * * * ? *)",
        "cron(15 3 * * ? *)",
        "cron(*/15 8-18 ? * MON-FRI *)",
        "cron(0,30 9 ? * 2-6 2026-2030)",
        "cron(0 12 L * ? *)",
        "cron(0 12 LW * ? *)",
        "cron(0 12 15W * ? *)",
        "cron(0 12 ? * 6L *)",
        "cron(0 12 ? * FRIL *)",
        "cron(0 12 ? * MON#2 *)",
        "cron(0 12 ? JAN-MAR,DEC SAT *)",
        "cron(10/5 * 1 * ? *)",
        "at(2026-12-24T18:00:00)",
    ],
)
def test_what_eventbridge_scheduler_accepts_passes(expression: str) -> None:
    assert check_schedule_expression(expression) == expression


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("rate(0 minutes)", "at least 1"),
        ("rate(1 minutes)", "write rate(1 minute)"),
        ("rate(5 minute)", "write rate(5 minutes)"),
        ("rate(5 weeks)", "write e.g. rate(5 minutes)"),
        ("rate(five minutes)", "write e.g. rate(5 minutes)"),
        ("cron(0 * * * *)", "six fields"),
        ("cron(0 * * * ? * *)", "six fields"),
        ("cron(0 * * * * *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(0 * ? * ? *)", "exactly one of day-of-month and day-of-week must be '?'"),
        ("cron(60 * * * ? *)", "minutes '60' is not in 0-59"),
        ("cron(0 24 * * ? *)", "hours '24' is not in 0-23"),
        ("cron(0 0 32 * ? *)", "day-of-month '32' is not in 1-31"),
        ("cron(0 0 * 13 ? *)", "month '13' is not in 1-12"),
        ("cron(0 0 * FOO ? *)", "month 'FOO' is not in 1-12"),
        ("cron(0 0 ? * 8 *)", "day-of-week '8' is not in 1-7"),
        ("cron(0 0 ? * MON#6 *)", "day-of-week"),
        ("cron(0 0 * * ? 1969)", "year '1969' is not in 1970-2199"),
        ("cron(*/0 * * * ? *)", "step '0' must be a positive number"),
        ("cron(0,,5 * * * ? *)", "empty list item"),
        ("cron(? * * * ? *)", "minutes '?'"),
        ("cron(0 0 L * L *)", "exactly one of"),
        ("at(2026-02-30T18:00:00)", "write e.g. at(2026-12-24T18:00:00)"),
        ("at(2026-12-24 18:00)", "write e.g. at(2026-12-24T18:00:00)"),
        ("0 * * * *", "write rate(...), cron(...) or at(...)"),
        ("hourly", "write rate(...), cron(...) or at(...)"),
    ],
)
def test_what_eventbridge_scheduler_refuses_is_refused_with_the_reason(expression: str, why: str) -> None:
    with pytest.raises(ValueError, match="invalid") as error:
        check_schedule_expression(expression)
    assert why in str(error.value)


@pytest.mark.parametrize(
    ("field", "location"),
    [
        ("schedule", "targets[0].schedule"),
        ("verify_schedule", "targets[0].verify_schedule"),
        ("archive_schedule", "targets[0].archive_schedule"),
        ("replication_check_schedule", "targets[0].replication_check_schedule"),
    ],
)
def test_a_bad_expression_in_the_config_is_one_line_naming_the_field(field: str, location: str) -> None:
    # Given a target whose schedule has five cron fields (a Unix crontab habit)
    text = config_with(**{field: "cron(0 * * * *)"})

    # When the config is parsed, Then one line names the field and says why
    with pytest.raises(ConfigError) as error:
        parse_config(text, source="drsentry.yaml")
    message = str(error.value)
    expected = f"drsentry.yaml: {location}: invalid cron expression 'cron(0 * * * *)'"
    assert message.startswith(expected), message
    assert "six fields" in message and "\n" not in message


def test_a_bad_stack_default_names_the_schedules_field() -> None:
    raw = yaml.safe_load(config_with())
    raw["schedules"] = {"verify": "rate(1 hours)"}
    with pytest.raises(ConfigError, match=r"^drsentry.yaml: schedules.verify: invalid rate expression"):
        parse_config(yaml.safe_dump(raw), source="drsentry.yaml")


def test_a_schedule_that_is_not_text_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"targets\[0\].schedule: "):
        parse_config(config_with(schedule=5), source="drsentry.yaml")


def test_each_job_uses_the_targets_own_expression_or_the_stacks() -> None:
    # Given a target with its own backup and verify schedules, and a stack default for archive
    raw = yaml.safe_load(config_with(schedule="rate(15 minutes)", verify_schedule="cron(5 * * * ? *)"))
    raw["schedules"] = {"archive": "cron(0 4 * * ? *)"}
    config = parse_config(yaml.safe_dump(raw))
    target = config.targets[0]

    # Then each job's schedule is the target's own, else the stack's, else the built-in default
    assert config.schedule_of(target, "backup") == "rate(15 minutes)"
    assert config.schedule_of(target, "verify") == "cron(5 * * * ? *)"
    assert config.schedule_of(target, "archive") == "cron(0 4 * * ? *)"
    assert config.schedule_of(target, "replication-check") == "cron(45 * * * ? *)"
