"""template.yaml's Fargate part: the task roles hold what the function roles hold and no more,
the state machine's role may run exactly the two task definitions, the definition's
placeholders are the template's substitutions, and the task definitions are what the code
and the state machine expect."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_template import (
    TEMPLATE,
    Json,
    as_list,
    load,
    role_actions,
    stack_managed_policies,
    translate,
    walk,
)

from drsentry.jobs.fargate.task import REASON_ENV, RUN_ID_ENV
from drsentry.jobs.lambda_container import CONFIG_PARAM_ENV, STATE_MACHINE_ENV

ROOT = Path(__file__).resolve().parents[2]
DEFINITION = ROOT / "infra" / "statemachine" / "run_task.asl.json"
# Only what the Lambda needs to hand a target to Fargate; a task never starts another task.
HAND_OFF_SID = "StartFargateRuns"
# What Lambda's asynchronous invocation needs; a task's failure is recorded by the state machine.
DEAD_LETTER_SID = "SendFailedInvocations"


@pytest.fixture(scope="module")
def sam() -> Json:
    return load(TEMPLATE)


@pytest.fixture(scope="module")
def cfn(sam: Json) -> Json:
    return translate(sam)


def sids(document: Any) -> set[str]:
    return {node["Sid"] for node in walk(document) if isinstance(node, dict) and "Sid" in node}


@pytest.mark.parametrize("job", ["Backup", "Verify"])
def test_a_fargate_run_has_exactly_the_rights_of_the_lambda_run(cfn: Json, job: str) -> None:
    task = cfn["Resources"][f"{job}TaskRole"]["Properties"]
    function = cfn["Resources"][f"{job}FunctionRole"]["Properties"]
    shared = f"{job}Policy"
    # one policy, attached to both roles: nothing to keep in step
    assert task["ManagedPolicyArns"] == [{"Ref": shared}]
    assert "Policies" not in task
    assert {"Ref": shared} in function["ManagedPolicyArns"]
    assert stack_managed_policies(cfn, f"{job}FunctionRole") == [shared]
    # the function role's own statements are what only a Lambda does: hand a target to Fargate
    # (a task never starts another task) and send its failed invocation to the dead-letter queue
    assert sids(function["Policies"]) == {HAND_OFF_SID, DEAD_LETTER_SID}
    assert not {HAND_OFF_SID, DEAD_LETTER_SID} & sids(cfn["Resources"][shared])
    lambda_only = {
        action
        for node in walk(function["Policies"])
        if isinstance(node, dict) and "Action" in node
        for action in as_list(node["Action"])
    }
    assert lambda_only == {"states:StartExecution", "sqs:SendMessage"}
    on_lambda = role_actions(cfn, f"{job}FunctionRole")
    on_fargate = role_actions(cfn, f"{job}TaskRole")
    assert on_fargate
    assert on_fargate == {action: where for action, where in on_lambda.items() if action not in lambda_only}


def test_task_roles_allow_no_wildcard_action_and_name_every_resource(cfn: Json) -> None:
    for role in ("BackupTaskRole", "VerifyTaskRole"):
        allowed = role_actions(cfn, role)
        assert allowed, role
        assert not [action for action in allowed if "*" in action], role
        for action, resources_of in allowed.items():
            assert "*" not in resources_of, f"{role}: {action} on *"
        trust = cfn["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert [s["Principal"] for s in trust] == [{"Service": "ecs-tasks.amazonaws.com"}]


def test_only_the_ecr_login_is_allowed_on_any_resource(cfn: Json) -> None:
    allowed = role_actions(cfn, "TaskExecutionRole")
    on_anything = {action for action, where in allowed.items() if "*" in where}
    assert on_anything == {"ecr:GetAuthorizationToken"}


def test_the_state_machine_may_run_the_two_task_definitions_and_pass_only_their_roles(cfn: Json) -> None:
    allowed = role_actions(cfn, "RunTaskStateMachineRole")
    assert allowed["ecs:RunTask"] == [{"Ref": "BackupTaskDefinition"}, {"Ref": "VerifyTaskDefinition"}]
    assert allowed["iam:PassRole"] == [
        {"Fn::GetAtt": [role, "Arn"]} for role in ("TaskExecutionRole", "BackupTaskRole", "VerifyTaskRole")
    ]
    assert allowed["lambda:InvokeFunction"][0] == {"Fn::GetAtt": ["TaskFailedFunction", "Arn"]}
    assert set(allowed) == {
        "ecs:RunTask",
        "ecs:DescribeTasks",
        "ecs:StopTask",
        "iam:PassRole",
        "events:PutTargets",
        "events:PutRule",
        "events:DescribeRule",
        "lambda:InvokeFunction",
    }


def test_the_definitions_placeholders_are_the_templates_substitutions(sam: Json) -> None:
    machine = sam["Resources"]["RunTaskStateMachine"]
    placeholders = set(re.findall(r"\$\{(\w+)\}", DEFINITION.read_text()))
    assert placeholders == set(machine["Properties"]["DefinitionSubstitutions"])
    assert machine["Properties"]["DefinitionUri"] == "infra/statemachine/run_task.asl.json"
    assert machine["Condition"] == "InVpc"  # awsvpc tasks need the functions' subnets


def test_the_tasks_run_the_container_the_state_machine_overrides_with_the_config_parameter(
    sam: Json,
) -> None:
    definition = json.loads(DEFINITION.read_text())
    override = definition["States"]["RunTask"]["Parameters"]["Overrides"]["ContainerOverrides"][0]
    assert {variable["Name"] for variable in override["Environment"]} == {RUN_ID_ENV, REASON_ENV}
    for name in ("BackupTaskDefinition", "VerifyTaskDefinition"):
        task = sam["Resources"][name]["Properties"]
        assert (task["RequiresCompatibilities"], task["NetworkMode"]) == (["FARGATE"], "awsvpc")
        assert task["EphemeralStorage"] == {"SizeInGiB": {"Ref": "TaskEphemeralStorageGiB"}}
        (container,) = task["ContainerDefinitions"]
        assert container["Name"] == override["Name"]
        environment = {variable["Name"]: variable["Value"] for variable in container["Environment"]}
        assert environment[CONFIG_PARAM_ENV] == {"Ref": "ConfigParameterName"}
    storage = sam["Parameters"]["TaskEphemeralStorageGiB"]
    assert (storage["MinValue"], storage["MaxValue"]) == (21, 200)


def test_backup_and_verify_functions_know_the_state_machine_only_in_a_vpc(sam: Json) -> None:
    for function in ("BackupFunction", "VerifyFunction"):
        variables = sam["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert variables[STATE_MACHINE_ENV] == {"Fn::If": ["InVpc", {"Ref": "RunTaskStateMachine"}, ""]}
        start = [
            node
            for node in walk(sam["Resources"][f"{function}Role"]["Properties"]["Policies"])
            if isinstance(node, dict) and node.get("Sid") == HAND_OFF_SID
        ]
        assert [as_list(s["Action"]) for s in start] == [["states:StartExecution"]]
        assert start[0]["Resource"] == {"Ref": "RunTaskStateMachine"}


def test_every_role_that_reads_the_database_secrets_is_an_output(cfn: Json) -> None:
    # A secret under a customer managed key needs kms:Decrypt granted, in the key's policy, to
    # each role that reads it: the stack names every such role, the Fargate tasks' included.
    readers = {
        name
        for name, resource in cfn["Resources"].items()
        if resource["Type"] == "AWS::IAM::Role"
        and any(
            "DatabaseSecretArns" in json.dumps(where)
            for where in role_actions(cfn, name).get("secretsmanager:GetSecretValue", [])
        )
    }
    named = {
        output["Value"]["Fn::GetAtt"][0]
        for output in cfn["Outputs"].values()
        if isinstance(output["Value"], dict) and "Fn::GetAtt" in output["Value"]
    }
    assert {"BackupTaskRole", "VerifyTaskRole"} <= readers
    assert readers <= named, f"roles reading the database secrets but not in the outputs: {readers - named}"
