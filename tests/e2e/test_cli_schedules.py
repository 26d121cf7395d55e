"""`drsentry schedules sync` against moto's EventBridge Scheduler over HTTP: the group ends up
holding exactly one schedule per target and job of the config (created, changed, deleted,
left unchanged), each sending its function the event that runs only its target."""

from __future__ import annotations

import importlib.util
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_process import run_cli

from drsentry.adapters.aws import AwsClients
from drsentry.core.events import parse_scheduled_event, scheduled_event
from drsentry.jobs.schedules.rules import DEAD_LETTER_ENV, FUNCTION_ENV, GROUP_ENV, ROLE_ENV

pytestmark = pytest.mark.e2e
REGION = "us-east-1"
ACCOUNT = "123456789012"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def stack(aws_endpoint: str) -> dict[str, str]:
    """A schedule group on moto and the variables that name it, the functions and the role."""
    group = f"drsentry-{secrets.token_hex(4)}"
    AwsClients(REGION).client("scheduler").create_schedule_group(Name=group)
    functions = {
        variable: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:drsentry-{job}"
        for job, variable in FUNCTION_ENV.items()
    }
    return {
        GROUP_ENV: group,
        ROLE_ENV: f"arn:aws:iam::{ACCOUNT}:role/drsentry-scheduler",
        DEAD_LETTER_ENV: f"arn:aws:sqs:{REGION}:{ACCOUNT}:drsentry-dead-letters",
        **functions,
    }


def two_targets(make_config: Any, source_db: str) -> Path:
    _, path = make_config(source_db)
    raw = yaml.safe_load(path.read_text())
    app = raw["targets"][0]
    billing = {"name": "billing", "dsn": app["dsn"], "schedule": "rate(15 minutes)"}  # no verify section
    raw["targets"] = [app, billing]
    path.write_text(yaml.safe_dump(raw))
    return path


def sync(path: Path, env: dict[str, str], *extra: str) -> dict[str, Any]:
    result = run_cli("schedules", "sync", "--config", str(path), "--json", *extra, env=env)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def group_schedules(group: str) -> dict[str, dict[str, Any]]:
    scheduler = AwsClients(REGION).client("scheduler")
    names = [s["Name"] for s in scheduler.list_schedules(GroupName=group)["Schedules"]]
    return {name: scheduler.get_schedule(GroupName=group, Name=name) for name in names}


def test_sync_creates_one_schedule_per_target_and_job(make_config: Any, source_db: str, stack: Any) -> None:
    # Given a config of two targets, one with a verify section and its own backup schedule
    path = two_targets(make_config, source_db)

    # When the schedules are synced into the empty group
    document = sync(path, stack)

    # Then each job the target has gets one schedule: billing has no verify
    expected = {
        "app.backup",
        "app.verify",
        "app.replication-check",
        "app.archive",
        "billing.backup",
        "billing.replication-check",
        "billing.archive",
    }
    assert {entry["name"] for entry in document["create"]} == expected
    schedules = group_schedules(stack[GROUP_ENV])
    assert set(schedules) == expected
    # with the target's own expression, else the stack's default
    assert schedules["billing.backup"]["ScheduleExpression"] == "rate(15 minutes)"
    assert schedules["app.backup"]["ScheduleExpression"] == "cron(0 * * * ? *)"
    assert schedules["app.verify"]["ScheduleExpression"] == "cron(30 * * * ? *)"
    # pointing at the job's function, through the scheduler's role, retried, then dead-lettered
    verify = schedules["app.verify"]
    assert verify["Target"]["Arn"] == stack[FUNCTION_ENV["verify"]]
    assert verify["Target"]["RoleArn"] == stack[ROLE_ENV]
    assert verify["Target"]["DeadLetterConfig"] == {"Arn": stack[DEAD_LETTER_ENV]}
    assert verify["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 3
    assert verify["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert verify["State"] == "ENABLED"
    # and the input, once Scheduler fills in its placeholders, is an event for that target only
    text = verify["Target"]["Input"]
    text = text.replace("<aws.scheduler.execution-id>", "d9c3b1e2-0000-4000-8000-000000000001")
    text = text.replace("<aws.scheduler.scheduled-time>", "2026-11-22T18:00:00Z")
    text = text.replace("<aws.scheduler.schedule-arn>", f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/g/s")
    event = parse_scheduled_event(json.loads(text))
    assert event.detail.target == "app"
    assert event.id == "d9c3b1e2-0000-4000-8000-000000000001"


def test_sync_changes_deletes_and_leaves_alone_to_match_the_config(
    make_config: Any, source_db: str, stack: Any
) -> None:
    # Given a group synced from a two-target config
    path = two_targets(make_config, source_db)
    sync(path, stack)

    # When billing is removed and app's backups move to every 15 minutes
    raw = yaml.safe_load(path.read_text())
    raw["targets"] = [{**raw["targets"][0], "schedule": "cron(*/15 * * * ? *)"}]
    path.write_text(yaml.safe_dump(raw))
    planned = sync(path, stack, "--dry-run")
    document = sync(path, stack)

    # Then the dry run planned exactly what the sync did, and the group matches the config
    assert {key: planned[key] for key in ("create", "update", "delete", "unchanged")} == {
        key: document[key] for key in ("create", "update", "delete", "unchanged")
    }
    assert document["create"] == []
    assert document["update"] == [
        {"name": "app.backup", "expression": "cron(*/15 * * * ? *)", "changes": ["expression"]}
    ]
    assert document["delete"] == ["billing.archive", "billing.backup", "billing.replication-check"]
    assert sorted(document["unchanged"]) == ["app.archive", "app.replication-check", "app.verify"]
    schedules = group_schedules(stack[GROUP_ENV])
    assert set(schedules) == {"app.backup", "app.verify", "app.replication-check", "app.archive"}
    assert schedules["app.backup"]["ScheduleExpression"] == "cron(*/15 * * * ? *)"
    # and a second sync finds nothing to do
    again = sync(path, stack)
    assert (again["create"], again["update"], again["delete"]) == ([], [], [])
    assert len(again["unchanged"]) == 4


def test_a_dry_run_changes_nothing(make_config: Any, source_db: str, stack: Any) -> None:
    path = two_targets(make_config, source_db)
    document = sync(path, stack, "--dry-run")
    assert document["dry_run"] is True and len(document["create"]) == 7
    assert group_schedules(stack[GROUP_ENV]) == {}


def test_pausing_in_the_config_disables_every_schedule(make_config: Any, source_db: str, stack: Any) -> None:
    path = two_targets(make_config, source_db)
    sync(path, stack)
    raw = yaml.safe_load(path.read_text())
    raw["schedules"] = {"enabled": False}
    path.write_text(yaml.safe_dump(raw))

    document = sync(path, stack)

    assert {entry["name"] for entry in document["update"]} == set(group_schedules(stack[GROUP_ENV]))
    assert {s["State"] for s in group_schedules(stack[GROUP_ENV]).values()} == {"DISABLED"}


def test_human_output_lists_the_plan(make_config: Any, source_db: str, stack: Any) -> None:
    path = two_targets(make_config, source_db)
    result = run_cli("schedules", "sync", "--config", str(path), "--dry-run", env=stack)
    assert result.returncode == 0, result.stderr
    assert "would create app.backup  cron(0 * * * ? *)" in result.stdout
    assert result.stdout.strip().endswith(
        "7 to create, 0 to update, 0 to delete, 0 unchanged (dry run: nothing changed)"
    )


def test_missing_stack_variables_are_one_line_and_exit_2(
    make_config: Any, source_db: str, stack: Any
) -> None:
    path = two_targets(make_config, source_db)
    env = {name: value for name, value in stack.items() if name != ROLE_ENV}
    result = run_cli("schedules", "sync", "--config", str(path), env=env, unset=(ROLE_ENV,))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: set {ROLE_ENV} (the stack's outputs; README: Schedules) to sync schedules"
    )


def test_a_group_that_does_not_exist_is_one_line(make_config: Any, source_db: str, stack: Any) -> None:
    # moto lists a missing group as empty; AWS answers ResourceNotFoundException. Creating a
    # schedule in it fails on both, which the sync reports in one line, exit 1.
    path = two_targets(make_config, source_db)
    env = {**stack, GROUP_ENV: "no-such-group"}
    result = run_cli("schedules", "sync", "--config", str(path), env=env)
    assert result.returncode == 1, result.stdout
    assert result.stderr.startswith("error: cannot create schedule no-such-group/app.backup: ")
    assert len(result.stderr.strip().splitlines()) == 1


def load_handler(function: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"handler_{function.replace('-', '_')}", ROOT / "functions" / function / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


@dataclass
class FakeLambdaContext:
    function_name: str = "drsentry-schedules-sync"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:drsentry-schedules-sync"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def parameter_changed(name: str) -> dict[str, Any]:
    """What EventBridge delivers for a Parameter Store change (the rule's target input)."""
    return {
        "version": "0",
        "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Parameter Store Change",
        "source": "aws.ssm",
        "account": ACCOUNT,
        "time": "2026-11-30T15:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter{name}"],
        "detail": {"operation": "Update", "name": name, "type": "String"},
    }


def test_the_sync_function_follows_each_change_of_the_config_parameter(
    make_config: Any, source_db: str, stack: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the config in its SSM parameter and the function's environment as the template sets it
    path = two_targets(make_config, source_db)
    ssm = AwsClients(REGION).ssm
    name = f"/drsentry/config-{secrets.token_hex(4)}"
    ssm.put_parameter(Name=name, Value=path.read_text(), Type="String")
    monkeypatch.setenv("DRSENTRY_CONFIG_PARAM", name)
    for variable, value in stack.items():
        monkeypatch.setenv(variable, value)
    handler = load_handler("schedules-sync")

    # When the parameter is created, then changed to drop billing (a warm container both times)
    first = handler(parameter_changed(name), FakeLambdaContext())
    raw = yaml.safe_load(path.read_text())
    raw["targets"] = raw["targets"][:1]
    ssm.put_parameter(Name=name, Value=yaml.safe_dump(raw), Type="String", Overwrite=True)
    second = handler(parameter_changed(name), FakeLambdaContext())

    # Then the first sync created every schedule, and the second read the new text at once
    assert len(first["create"]) == 7
    assert second["delete"] == ["billing.archive", "billing.backup", "billing.replication-check"]
    assert set(group_schedules(stack[GROUP_ENV])) == {
        "app.backup",
        "app.verify",
        "app.replication-check",
        "app.archive",
    }


def test_a_scheduled_event_naming_a_target_backs_up_only_that_target(
    make_config: Any, source_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two targets in the config parameter
    path = two_targets(make_config, source_db)
    ssm = AwsClients(REGION).ssm
    name = f"/drsentry/config-{secrets.token_hex(4)}"
    ssm.put_parameter(Name=name, Value=path.read_text(), Type="String")
    monkeypatch.setenv("DRSENTRY_CONFIG_PARAM", name)

    # When billing's backup schedule fires
    result = load_handler("backup")(scheduled_event("billing"), FakeLambdaContext())

    # Then only billing ran
    assert [backup["target"] for backup in result["backups"]] == ["billing"]
    assert [outcome["target"] for outcome in result["outcomes"]] == ["billing"]
