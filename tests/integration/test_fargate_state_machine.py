"""The Fargate state machine (infra/statemachine/run_task.asl.json) on moto's Step Functions
executor, and the Lambda's side of it: the hand-off and the failure step.

moto executes the definition itself (with `stepfunctions: execute_state_machine` switched on
through /moto-api/config): the Choice states, the ecs:runTask.sync wait, the container
overrides built with States.Array, the Catch and the lambda:invoke of the failure step.

moto 5.2.5's executor (ported from LocalStack's) leaves out one step of every AWS SDK-style
integration: turning the definition's PascalCase parameters into the API's member names and
the response back (`StateTaskService._normalise_parameters` / `_normalise_response` are empty),
so any ecs:runTask.sync fails with `States.Runtime: 'Cluster'`. The `sdk_case_conversion`
fixture puts that step back, as LocalStack does it, from botocore's shapes; nothing else of
moto is changed, and the definition is the file CloudFormation deploys. Its
ECS runs no container: a task goes from RUNNING to STOPPED as it is described and its
container reports exit code 0. For the non-zero exit the test makes moto's ECS model report
137 and an OOM reason, which is what ECS reports for a task killed for its memory; moto's
Lambda (without Docker) echoes the payload it is invoked with, so the failure step's input
is read back from the execution and handed to the real failure step against the catalog.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.request import Request, urlopen

import botocore.session
import pytest
from botocore import xform_name
from botocore.model import ListShape, Shape, StructureShape
from moto.ecs import models as ecs_models
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.state_task_service import (
    StateTaskService,
)
from test_runner import subscribe

from drsentry.adapters.aws import AwsClients
from drsentry.core.events import ScheduledEvent
from drsentry.jobs.backup.job import backup_target, run_scheduled_backup
from drsentry.jobs.fargate.task_failed import TaskFailure, record_task_failure
from drsentry.jobs.runtime import FargateHandOff, Runtime, build_runtime

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "infra" / "statemachine" / "run_task.asl.json"
ACCOUNT = "123456789012"
REGION = "us-east-1"
CONTAINER = "drsentry"
NOT_REGISTERED = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/drsentry-not-registered:1"
OOM_REASON = "OutOfMemoryError: Container killed due to memory usage"


def moto_config(endpoint: str, config: dict[str, Any]) -> None:
    request = Request(
        f"{endpoint}/moto-api/config",
        data=json.dumps(config).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urlopen(request, timeout=10) as response:
        assert response.status == 201


def to_api_names(parameters: Any, shape: Shape) -> None:
    """Rename the definition's keys (`Cluster`, `AwsvpcConfiguration`) to the shape's members."""
    if not isinstance(shape, StructureShape) or not isinstance(parameters, dict):
        return
    members = {name.lower(): name for name in shape.members}
    for key in list(parameters):
        member = members.get(key.lower())
        if member is None:
            continue
        value = parameters.pop(key)
        member_shape = shape.members[member]
        if isinstance(member_shape, ListShape) and isinstance(value, list):
            for item in value:
                to_api_names(item, member_shape.member)
        else:
            to_api_names(value, member_shape)
        parameters[member] = value


def operation_model(service: StateTaskService, boto_service: str | None, action: str | None) -> Any:
    name = service._get_boto_service_name(boto_service)  # noqa: SLF001
    operation = xform_name(service._get_boto_service_action(action), "")  # noqa: SLF001
    model = botocore.session.get_session().get_service_model(name)
    return model.operation_model(next(op for op in model.operation_names if xform_name(op) == operation))


@pytest.fixture
def sdk_case_conversion(monkeypatch: pytest.MonkeyPatch) -> None:
    def normalise_parameters(
        self: StateTaskService,
        parameters: dict[str, Any],
        boto_service_name: Any = None,
        service_action_name: Any = None,
    ) -> None:
        to_api_names(parameters, operation_model(self, boto_service_name, service_action_name).input_shape)

    def normalise_response(
        self: StateTaskService, response: Any, boto_service_name: Any = None, service_action_name: Any = None
    ) -> None:
        output = operation_model(self, boto_service_name, service_action_name).output_shape
        self._from_boto_response(response, output)  # noqa: SLF001

    monkeypatch.setattr(StateTaskService, "_normalise_parameters", normalise_parameters)
    monkeypatch.setattr(StateTaskService, "_normalise_response", normalise_response)


@pytest.fixture
def executor(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch, sdk_case_conversion: None) -> Iterator[str]:
    """moto executing state machines, its Lambda without Docker; both switched back afterwards."""
    # moto's executor sends its ECS and Lambda calls to localhost:$MOTO_PORT: this server's port.
    monkeypatch.setenv("MOTO_PORT", aws_endpoint.rsplit(":", 1)[1])
    moto_config(
        aws_endpoint, {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
    )
    try:
        yield aws_endpoint
    finally:
        moto_config(
            aws_endpoint, {"stepfunctions": {"execute_state_machine": False}, "lambda": {"use_docker": True}}
        )


@dataclass
class Stack:
    """The Fargate side of a stack on moto: cluster, task definitions, failure function, state machine."""

    clients: AwsClients
    state_machine_arn: str
    backup_task_definition: str

    def run(self, job: str, target: str = "app") -> tuple[str, dict[str, Any]]:
        """Start an execution as the Lambda's hand-off does; wait for it; (status, execution input)."""
        execution_input = {"job": job, "target": target, "run_id": secrets.token_hex(16), "reason": "test"}
        sfn = self.clients.stepfunctions
        arn = sfn.start_execution(stateMachineArn=self.state_machine_arn, input=json.dumps(execution_input))[
            "executionArn"
        ]
        deadline = time.monotonic() + 60
        while (status := sfn.describe_execution(executionArn=arn)["status"]) == "RUNNING":
            assert time.monotonic() < deadline, "the execution did not finish within 60 s"
            time.sleep(0.2)
        self.last_execution = arn
        return status, execution_input

    def history(self) -> list[dict[str, Any]]:
        sfn = self.clients.stepfunctions
        return sfn.get_execution_history(executionArn=self.last_execution, maxResults=1000)["events"]

    def entered(self) -> list[str]:
        return [
            e["stateEnteredEventDetails"]["name"] for e in self.history() if "stateEnteredEventDetails" in e
        ]

    def failure_step_input(self) -> dict[str, Any]:
        """What the failure step was invoked with (moto's Lambda echoes it back as its result)."""
        for event in self.history():
            if (
                event["type"] == "TaskSucceeded"
                and event["taskSucceededEventDetails"]["resourceType"] == "lambda"
            ):
                payload: dict[str, Any] = json.loads(event["taskSucceededEventDetails"]["output"])["Payload"]
                return payload
        raise AssertionError(f"the failure step was not invoked: {self.entered()}")


def substituted(definition: str, values: dict[str, str]) -> str:
    """CloudFormation's DefinitionSubstitutions: plain text replacement of ${Name}."""
    for name, value in values.items():
        definition = definition.replace("${" + name + "}", value)
    assert not re.search(r"\$\{\w+\}", definition), "a placeholder was left unsubstituted"
    return definition


def task_definition(clients: AwsClients, family: str) -> str:
    ecs = clients.client("ecs")
    return ecs.register_task_definition(
        family=family,
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="4096",
        containerDefinitions=[
            {"name": CONTAINER, "image": "drsentry:test", "essential": True, "memory": 4096}
        ],
    )["taskDefinition"]["taskDefinitionArn"]


def failure_function(clients: AwsClients, suffix: str) -> str:
    iam = clients.client("iam")
    role = iam.create_role(
        RoleName=f"task-failed-{suffix}",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )["Role"]["Arn"]
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    return clients.client("lambda").create_function(
        FunctionName=f"task-failed-{suffix}",
        Runtime="python3.11",
        Role=role,
        Handler="app.lambda_handler",
        Code={"ZipFile": code.getvalue()},
    )["FunctionArn"]


@pytest.fixture
def stack(executor: str, clients: AwsClients) -> Stack:
    suffix = secrets.token_hex(4)
    cluster = clients.client("ecs").create_cluster(clusterName=f"drsentry-{suffix}")["cluster"]["clusterArn"]
    backup_definition = task_definition(clients, f"drsentry-backup-{suffix}")
    # The functions' private subnets and security group, which the tasks share.
    ec2 = clients.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    # DNS hostnames on, as interface endpoints with private DNS need (moto's ENIs need it too).
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{number}.0/24")["Subnet"]["SubnetId"]
        for number in (1, 2)
    ]
    group = ec2.create_security_group(GroupName=f"drsentry-{suffix}", Description="drsentry", VpcId=vpc)[
        "GroupId"
    ]
    definition = substituted(
        DEFINITION.read_text(),
        {
            "Partition": "aws",
            "ClusterArn": cluster,
            "BackupTaskDefinitionArn": backup_definition,
            # Not registered: a verify execution's RunTask fails, as for a task that cannot start.
            "VerifyTaskDefinitionArn": NOT_REGISTERED,
            # CloudFormation substitutes text: a list joined with '","' inside ["${SubnetIds}"].
            "SubnetIds": '","'.join(subnets),
            "SecurityGroupIds": group,
            "TaskFailedFunctionArn": failure_function(clients, suffix),
        },
    )
    arn = clients.stepfunctions.create_state_machine(
        name=f"drsentry-run-task-{suffix}",
        definition=definition,
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/drsentry-state-machine",
        type="STANDARD",
    )["stateMachineArn"]
    return Stack(clients, arn, backup_definition)


@pytest.fixture
def exits_137(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's ECS reports every container of a new task as OOM-killed (exit 137)."""
    original = ecs_models.Container.__init__

    def oom_killed(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.exitCode = 137
        self.reason = OOM_REASON

    monkeypatch.setattr(ecs_models.Container, "__init__", oom_killed)


def test_a_task_that_exits_0_ends_the_execution_in_success_with_the_job_as_its_command(stack: Stack) -> None:
    status, execution_input = stack.run("backup")

    assert status == "SUCCEEDED"
    assert stack.entered() == [
        "ChooseTaskDefinition",
        "BackupTaskDefinition",
        "RunTask",
        "CheckExitCode",
        "Done",
    ]
    ecs = stack.clients.client("ecs")
    cluster = ecs.list_clusters()["clusterArns"]
    tasks = [
        task
        for arn in cluster
        for task in ecs.describe_tasks(
            cluster=arn, tasks=ecs.list_tasks(cluster=arn)["taskArns"] or ["none"]
        )["tasks"]
        if task["taskDefinitionArn"] == stack.backup_task_definition
    ]
    assert len(tasks) == 1
    override = tasks[0]["overrides"]["containerOverrides"][0]
    assert override["name"] == CONTAINER
    assert override["command"] == ["backup", "--target", "app"]
    assert {"name": "DRSENTRY_RUN_ID", "value": execution_input["run_id"]} in override["environment"]


def test_a_task_that_exits_non_zero_fails_the_execution_through_the_failure_step(
    stack: Stack, exits_137: None
) -> None:
    status, execution_input = stack.run("backup")

    assert status == "FAILED"
    assert stack.entered()[-3:] == ["CheckExitCode", "RecordFailure", "RunFailed"]
    sent = TaskFailure.model_validate(stack.failure_step_input())
    assert (sent.job, sent.target, sent.run_id) == ("backup", "app", execution_input["run_id"])
    assert sent.describe() == f"the Fargate task exited 137: {OOM_REASON}"


def test_a_task_that_cannot_start_is_caught_and_goes_to_the_failure_step(stack: Stack) -> None:
    status, _ = stack.run("verify")

    assert status == "FAILED"
    assert stack.entered()[-3:] == ["RunTask", "RecordFailure", "RunFailed"]
    sent = TaskFailure.model_validate(stack.failure_step_input())
    assert sent.error is not None and sent.task is None
    assert sent.describe().startswith("the Fargate task failed: ")


def test_an_unknown_job_fails_without_starting_a_task(stack: Stack) -> None:
    status, _ = stack.run("archive")

    assert status == "FAILED"
    assert stack.entered() == ["ChooseTaskDefinition", "UnknownJob"]


# The failure step and the hand-off, against the catalog --------------------------------


def runtime_of(make_config: Any, source_dsn: str, **target: Any) -> Runtime:
    config, _ = make_config(source_dsn, **target)
    return build_runtime(config)


def test_the_failure_step_records_a_killed_backup_once_and_sends_the_notice(
    stack: Stack, exits_137: None, make_config: Any
) -> None:
    runtime = runtime_of(make_config, "postgresql://nobody@127.0.0.1:1/none")
    notices = subscribe(runtime)
    stack.run("backup")
    failure = TaskFailure.model_validate(stack.failure_step_input())

    first = record_task_failure(runtime, failure)
    again = record_task_failure(runtime.for_invocation(), failure)

    assert (first.recorded, again.recorded) == (True, False)
    backups = runtime.catalog.list_backups("app")
    assert len(backups) == 1
    failed = backups[0]
    assert failed.status == "failed"
    assert failed.error == f"the Fargate task exited 137: {OOM_REASON}"
    assert failed.run_id == failure.run_id
    assert failed.runner is not None and (failed.runner.name, failed.runner.reason) == ("fargate", "test")
    received = notices()
    assert [(n["source"], n["severity"], n["status"], n["run_id"]) for n in received] == [
        ("backup", "critical", "failed", failure.run_id)
    ]


def test_the_failure_step_adds_nothing_to_a_run_that_recorded_its_own_failure(
    make_config: Any, pg_server: Any
) -> None:
    # Given a Fargate run whose dump failed: it wrote its failed record under its run id
    runtime = runtime_of(make_config, "postgresql://nobody@127.0.0.1:1/none")
    failure = TaskFailure(job="backup", target="app", run_id=secrets.token_hex(16), reason="test")
    task = replace(runtime, run_id=failure.run_id)
    own = backup_target(task, "app")
    assert own.status == "failed"

    outcome = record_task_failure(runtime, failure)

    assert not outcome.recorded
    assert [record.backup_id for record in runtime.catalog.list_backups("app")] == [own.backup_id]


def test_the_failure_step_records_a_timed_out_verification_against_the_newest_backup(
    make_config: Any, source_db: str
) -> None:
    runtime = runtime_of(make_config, source_db)
    newest = backup_target(runtime, "app")
    failure = TaskFailure.model_validate(
        {
            "job": "verify",
            "target": "app",
            "run_id": secrets.token_hex(16),
            "reason": "test",
            "error": {"Error": "States.Timeout", "Cause": ""},
        }
    )

    outcome = record_task_failure(runtime.for_invocation(), failure)

    assert outcome.recorded
    verification = runtime.catalog.verifications.latest("app")
    assert verification is not None
    assert (verification.backup_id, verification.status, verification.run_id) == (
        newest.backup_id,
        "failure",
        failure.run_id,
    )
    assert (
        verification.error_details
        == "restore: the Fargate run outran the state machine's timeout and was stopped"
    )


def test_a_lambda_hands_a_fargate_target_to_the_state_machine_and_writes_no_record(
    stack: Stack, make_config: Any
) -> None:
    runtime = runtime_of(make_config, "postgresql://nobody@127.0.0.1:1/none", runner="fargate")
    runtime.fargate = FargateHandOff(stack.state_machine_arn, 900.0)

    result = run_scheduled_backup(runtime, ScheduledEvent.now("app"))

    [outcome] = result.outcomes
    assert outcome.outcome == "handed_off"
    assert outcome.reason is not None and ":execution:" in outcome.reason
    assert runtime.catalog.list_backups("app") == []
    started = stack.clients.stepfunctions.describe_execution(executionArn=outcome.reason)
    handed = json.loads(started["input"])
    assert (handed["job"], handed["target"], handed["reason"]) == (
        "backup",
        "app",
        "runner: fargate in the configuration",
    )


def test_a_hand_off_step_functions_refuses_is_a_target_not_run_with_a_critical_notice(
    stack: Stack, make_config: Any
) -> None:
    # Given a Fargate target whose state machine does not exist (deleted, or a wrong ARN)
    runtime = runtime_of(make_config, "postgresql://nobody@127.0.0.1:1/none", runner="fargate")
    missing = stack.state_machine_arn.rsplit(":", 1)[0] + ":no-such-machine"
    runtime.fargate = FargateHandOff(missing, 900.0)
    notices = subscribe(runtime)

    # When its scheduled backup runs on Lambda
    result = run_scheduled_backup(runtime, ScheduledEvent.now("app"))

    # Then the target did not run, says why in one line naming the machine, and people are told
    [outcome] = result.outcomes
    assert outcome.outcome == "not_run"
    assert outcome.reason is not None and "no-such-machine" in outcome.reason
    assert "\n" not in outcome.reason
    assert runtime.catalog.list_backups("app") == []
    assert [(n["source"], n["severity"], n["target"]) for n in notices()] == [("backup", "critical", "app")]


def test_a_lambda_runs_a_new_auto_target_itself_and_records_why(make_config: Any, source_db: str) -> None:
    runtime = runtime_of(make_config, source_db)
    runtime.fargate = FargateHandOff("arn:aws:states:us-east-1:123456789012:stateMachine:unused", 900.0)

    result = run_scheduled_backup(runtime, ScheduledEvent.now("app"))

    [record] = runtime.catalog.list_backups("app")
    assert [outcome.outcome for outcome in result.outcomes] == ["ran"]
    assert record.status == "completed"
    assert record.runner is not None
    assert (record.runner.name, record.runner.reason) == ("lambda", "auto: no previous backup to measure")
