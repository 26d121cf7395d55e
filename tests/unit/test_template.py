"""template.yaml and infra/replica.yaml: lint-clean, transformed offline, and true to the code.

The SAM template is transformed with aws-sam-translator exactly as `sam deploy` would (no
network: code locations become placeholder S3 objects, the managed-policy lookup is a stub),
and the structural checks run on both the source and the transformed template, so the
roles SAM generates (schedule roles, on-failure destinations) are checked too. The last
tests deploy the transformed template to moto's CloudFormation in-process; moto skips the
resource types it does not implement (alarms, schedules and schedule groups, secrets,
bucket and topic policies, SNS subscriptions, event-invoke configs) and applies only the
encryption of a bucket, so those are checked structurally here instead.
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import subprocess
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import pytest
import yaml
from cfnlint.api import lint_file
from cfnlint.decode import decode
from moto import mock_aws
from moto.cloudformation import parsing as moto_cloudformation_parsing
from samtranslator.translator.arn_generator import ArnGenerator
from samtranslator.translator.managed_policy_translator import ManagedPolicyLoader
from samtranslator.translator.transform import transform

from drsentry.adapters.buckets import encryption_args
from drsentry.adapters.table import keys, schema
from drsentry.core import observability
from drsentry.core.config import parse_config
from drsentry.core.events import parse_scheduled_event
from drsentry.core.schedules import ScheduleSpec
from drsentry.jobs.lambda_container import CONFIG_PARAM_ENV
from drsentry.jobs.notify.topic import NO_TARGET
from drsentry.jobs.schedules.rules import (
    DEAD_LETTER_ENV,
    FUNCTION_ENV,
    GROUP_ENV,
    ROLE_ENV,
    Deployment,
    desired_schedules,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
REPLICA_TEMPLATE = ROOT / "infra" / "replica.yaml"
FUNCTIONS_DIR = ROOT / "functions"
LAYERS_DIR = ROOT / "layers"
REGION = "us-east-1"
ACCOUNT = "123456789012"
ARTIFACT_BUCKET = "drsentry-artifacts"
AWS_METRIC_NAMESPACES = {"AWS/Lambda", "AWS/SQS"}
# Supported by Lambda until 2029 (python3.11 is deprecated on 2027-06-30).
RUNTIME = "python3.13"
ALARM_TOPIC = {"Ref": "AlertsTopic"}
# A replica in another region, crr mode and a VPC: every conditional part of the template on.
FULL_PARAMETERS = {
    "ReplicaBucketName": "acme-dr-replica",
    "ReplicaRegion": "eu-west-1",
    "ReplicaKmsKeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
    "ReplicationMode": "crr",
    "SubnetIds": "subnet-1,subnet-2",
    "SecurityGroupIds": "sg-1",
    "DatabaseSecretArns": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-1-AbCdEf",
    "AlertEmail": "oncall@example.com",
}

Json = dict[str, Any]
MOTO_CLEAN_JSON = moto_cloudformation_parsing.clean_json


# Loading and transforming ---------------------------------------------------------------


def load(path: Path) -> Json:
    """The template as plain JSON data, short-form tags (!Ref, !Sub) in their long form."""
    template, matches = decode(str(path))
    assert not matches, [str(match) for match in matches]
    plain: Json = json.loads(json.dumps(template))
    return plain


def artifact_key(local_path: str) -> str:
    return local_path.strip("/").replace("/", "-") + ".zip"


def translate(sam_template: Json) -> Json:
    """aws-sam-translator's transform, offline: the recipe cfn-lint used before it dropped SAM."""
    fragment = copy.deepcopy(sam_template)
    for resource in fragment["Resources"].values():
        properties = resource.get("Properties", {})
        for uri in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(properties.get(uri), str):
                # `sam build` / `sam package` replace the local folder with an uploaded zip.
                properties[uri] = {"Bucket": ARTIFACT_BUCKET, "Key": artifact_key(properties[uri])}
    policy_loader = mock.create_autospec(ManagedPolicyLoader, instance=True)
    policy_loader.load.return_value = {}
    with mock.patch.object(ArnGenerator, "BOTO_SESSION_REGION_NAME", REGION):
        transformed: Json = transform(fragment, {}, policy_loader)
    return json.loads(json.dumps(transformed))


@pytest.fixture(scope="module")
def sam() -> Json:
    return load(TEMPLATE)


@pytest.fixture(scope="module")
def replica() -> Json:
    return load(REPLICA_TEMPLATE)


@pytest.fixture(scope="module")
def cfn(sam: Json) -> Json:
    return translate(sam)


def resources(template: Json, resource_type: str) -> dict[str, Json]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == resource_type}


def functions(sam: Json) -> dict[str, Json]:
    return resources(sam, "AWS::Serverless::Function")


def function_for(sam: Json, folder: str) -> tuple[str, Json]:
    for name, function in functions(sam).items():
        if function["Properties"]["CodeUri"].strip("/") == f"functions/{folder}":
            return name, function
    raise AssertionError(f"no function has CodeUri functions/{folder}/")


def function_folders() -> set[str]:
    return {p.name for p in FUNCTIONS_DIR.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}


def default(sam: Json, parameter: str) -> Any:
    return sam["Parameters"][parameter].get("Default")


def resolve(sam: Json, value: Any) -> Any:
    """The value with parameter defaults and mappings resolved; other intrinsics stay as they are."""
    if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in sam["Parameters"]:
        return default(sam, value["Ref"])
    if isinstance(value, dict) and list(value) == ["Fn::FindInMap"]:
        mapping, key, attribute = value["Fn::FindInMap"]
        return sam["Mappings"][mapping][key][attribute]
    return value


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, dict):
        for child in node.values():
            yield from walk(child)
    elif isinstance(node, list):
        for child in node:
            yield from walk(child)


def policy_statements(template: Json) -> Iterator[tuple[str, Json]]:
    """Every statement of every policy document (identity, trust, bucket, topic and key policies),
    both branches of an Fn::If included."""
    for name, resource in template["Resources"].items():
        for node in walk(resource.get("Properties", {})):
            if isinstance(node, dict) and "Effect" in node and ("Action" in node or "NotAction" in node):
                yield name, node


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def stack_managed_policies(template: Json, role: str) -> list[str]:
    """The names of the stack's own managed policies (AWS::IAM::ManagedPolicy) a role attaches."""
    arns = template["Resources"][role]["Properties"].get("ManagedPolicyArns", [])
    return [arn["Ref"] for arn in arns if isinstance(arn, dict) and "Ref" in arn]


def role_documents(template: Json, role: str) -> list[Any]:
    """A role's own statements: its inline policies and the stack's managed policies it attaches."""
    documents: list[Any] = [template["Resources"][role]["Properties"].get("Policies", [])]
    for policy in stack_managed_policies(template, role):
        assert template["Resources"][policy]["Type"] == "AWS::IAM::ManagedPolicy", policy
        documents.append(template["Resources"][policy]["Properties"]["PolicyDocument"])
    return documents


def role_actions(cfn: Json, role: str) -> dict[str, list[Any]]:
    """Action -> the resources it is allowed on, over a role's inline and stack managed policies."""
    allowed: dict[str, list[Any]] = {}
    for statement in walk(role_documents(cfn, role)):
        if isinstance(statement, dict) and statement.get("Effect") == "Allow":
            for action in as_list(statement["Action"]):
                allowed.setdefault(action, []).extend(as_list(statement["Resource"]))
    return allowed


# cfn-lint, sam validate and the transform -----------------------------------------------


@pytest.mark.parametrize("path", [TEMPLATE, REPLICA_TEMPLATE], ids=lambda p: p.name)
def test_cfn_lint_reports_nothing(path: Path) -> None:
    matches = lint_file(path)
    assert not matches, "\n".join(str(match) for match in matches)


@pytest.mark.skipif(shutil.which("sam") is None, reason="the SAM CLI is not installed")
def test_sam_validate_lint_passes() -> None:
    result = subprocess.run(
        ["sam", "validate", "--lint", "--template", str(TEMPLATE), "--region", REGION],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_transforms_offline_to_plain_cloudformation(cfn: Json) -> None:
    types = {resource["Type"] for resource in cfn["Resources"].values()}
    assert not {t for t in types if t.startswith("AWS::Serverless::")}
    assert len(resources(cfn, "AWS::Lambda::Function")) == len(function_folders())
    # The schedules are synced from drsentry.yaml into the stack's group, not fixed in the template.
    assert resources(cfn, "AWS::Scheduler::Schedule") == {}
    assert len(resources(cfn, "AWS::Scheduler::ScheduleGroup")) == 1


# Functions, schedules, layers ----------------------------------------------------------------


def test_every_function_folder_has_a_function_and_every_function_a_folder(sam: Json) -> None:
    code_folders = {f["Properties"]["CodeUri"].strip("/") for f in functions(sam).values()}
    assert code_folders == {f"functions/{folder}" for folder in function_folders()}
    handler = sam["Globals"]["Function"]["Handler"]
    module, function_name = handler.split(".")
    for folder in function_folders():
        source = (FUNCTIONS_DIR / folder / f"{module}.py").read_text()
        assert f"def {function_name}(" in source, f"functions/{folder}/{module}.py has no {function_name}"


# Functions no schedule invokes: notify (the alerts topic), schedules-sync (config changes),
# task-failed (the Fargate state machine).
JOB_FOLDERS = sorted(function_folders() - {"notify", "schedules-sync", "task-failed"})


def sync_environment(sam: Json) -> Json:
    _, function = function_for(sam, "schedules-sync")
    variables: Json = function["Properties"]["Environment"]["Variables"]
    return variables


def synced_schedules(sam: Json) -> list[ScheduleSpec]:
    """What the schedules-sync function writes for the starter config's defaults (two targets,
    one with a verify section, a replica): the template's parameters become `schedules:`."""
    environment = sync_environment(sam)
    for job, variable in FUNCTION_ENV.items():
        name = environment[variable]["Fn::GetAtt"][0]
        assert function_for(sam, job)[0] == name, f"{variable} is not the {job} function"
    deployment = Deployment(
        group="g",
        role_arn=f"arn:aws:iam::{ACCOUNT}:role/scheduler",
        function_arns={job: f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{job}" for job in FUNCTION_ENV},
        dead_letter_arn=f"arn:aws:sqs:{REGION}:{ACCOUNT}:dead-letters",
    )
    config = parse_config(
        yaml.safe_dump(
            {
                "storage": {
                    "bucket": "b",
                    "region": REGION,
                    "replica": {"bucket": "r", "region": "eu-west-1"},
                },
                "schedules": {
                    "backup": default(sam, "BackupSchedule"),
                    "verify": default(sam, "VerifySchedule"),
                    "replication_check": default(sam, "ReplicationCheckSchedule"),
                    "archive": default(sam, "ArchiveSchedule"),
                    "timezone": default(sam, "ScheduleTimezone"),
                },
                "targets": [
                    {
                        "name": "app",
                        "dsn": "postgresql://a@h/app",
                        "verify": {"scratch_dsn": "postgresql://a@h/s"},
                    },
                    {"name": "crm", "dsn": "postgresql://a@h/crm"},
                ],
            }
        )
    )
    return desired_schedules(config, deployment)


def test_the_sync_function_points_schedules_at_the_job_functions_through_the_scheduler_role(
    sam: Json,
) -> None:
    environment = sync_environment(sam)
    assert environment[GROUP_ENV] == {"Ref": "ScheduleGroup"}
    assert environment[ROLE_ENV] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    assert environment[DEAD_LETTER_ENV] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}


@pytest.mark.parametrize("folder", JOB_FOLDERS)
def test_each_job_gets_utc_schedules_with_retries_and_a_dead_letter_queue(sam: Json, folder: str) -> None:
    _, function = function_for(sam, folder)
    schedules = [s for s in synced_schedules(sam) if s.name.endswith(f".{folder}")]
    assert schedules, f"{folder}: no schedule"
    for schedule in schedules:
        assert schedule.timezone == "UTC"
        assert schedule.retry_attempts >= 1
        assert schedule.dead_letter_arn == f"arn:aws:sqs:{REGION}:{ACCOUNT}:dead-letters"
        assert schedule.expression.startswith(("cron(", "rate("))
    on_failure = function["Properties"]["EventInvokeConfig"]["DestinationConfig"]["OnFailure"]
    assert on_failure["Destination"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}


@pytest.mark.parametrize("folder", JOB_FOLDERS)
def test_schedule_input_is_the_eventbridge_event_the_code_parses(sam: Json, folder: str) -> None:
    for schedule in [s for s in synced_schedules(sam) if s.name.endswith(f".{folder}")]:
        # What EventBridge Scheduler puts in place of the placeholders.
        text = schedule.input.replace("<aws.scheduler.execution-id>", "d9c3b1e2-0000-4000-8000-000000000001")
        text = text.replace("<aws.scheduler.scheduled-time>", "2026-11-22T18:00:00Z")
        text = text.replace(
            "<aws.scheduler.schedule-arn>", f"arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/g/s"
        )
        assert "<aws." not in text

        event = parse_scheduled_event(json.loads(text))

        assert event.id == "d9c3b1e2-0000-4000-8000-000000000001"  # the idempotency key
        assert event.detail.target == schedule.name.split(".")[0]  # exactly this schedule's target
        assert event.detail.dry_run is False
        assert (event.account, event.region) == (ACCOUNT, REGION)


def test_a_change_of_the_config_parameter_runs_the_sync(sam: Json) -> None:
    _, function = function_for(sam, "schedules-sync")
    (event,) = function["Properties"]["Events"].values()
    assert event["Type"] == "EventBridgeRule"
    pattern = event["Properties"]["Pattern"]
    assert pattern["source"] == ["aws.ssm"]
    assert pattern["detail-type"] == ["Parameter Store Change"]
    assert pattern["detail"]["name"] == [{"Ref": "ConfigParameterName"}]


def test_the_scheduler_role_may_only_invoke_the_job_functions_and_dead_letter(sam: Json, cfn: Json) -> None:
    role = cfn["Resources"]["SchedulerRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    source = trust["Condition"]["StringEquals"]["aws:SourceArn"]["Fn::Sub"]
    assert source.endswith(":schedule-group/${ScheduleGroup}")
    allowed = role_actions(cfn, "SchedulerRole")
    assert set(allowed) == {"lambda:InvokeFunction", "sqs:SendMessage"}
    invoked = {resource["Fn::GetAtt"][0] for resource in allowed["lambda:InvokeFunction"]}
    assert invoked == {function_for(sam, folder)[0] for folder in JOB_FOLDERS}
    assert allowed["sqs:SendMessage"] == [{"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}]


def test_the_sync_function_may_change_only_its_groups_schedules_and_pass_only_the_scheduler_role(
    sam: Json, cfn: Json
) -> None:
    name, _ = function_for(sam, "schedules-sync")
    allowed = role_actions(cfn, f"{name}Role")
    region_account = "${AWS::Region}:${AWS::AccountId}"
    group_schedules = {
        "Fn::Sub": f"arn:${{AWS::Partition}}:scheduler:{region_account}:schedule/${{ScheduleGroup}}/*"
    }
    for action in ("scheduler:GetSchedule", "scheduler:CreateSchedule", "scheduler:UpdateSchedule"):
        assert allowed[action] == [group_schedules], action
    assert allowed["scheduler:DeleteSchedule"] == [group_schedules]
    assert allowed["iam:PassRole"] == [{"Fn::GetAtt": ["SchedulerRole", "Arn"]}]
    assert allowed["scheduler:ListSchedules"] == ["*"]  # IAM gives ListSchedules no resource type
    assert not {a for a in allowed if a.startswith(("s3:", "dynamodb:", "secretsmanager:", "lambda:"))}


def test_notify_is_subscribed_to_the_alerts_topic(sam: Json) -> None:
    _, function = function_for(sam, "notify")
    (event,) = function["Properties"]["Events"].values()
    assert event == {"Type": "SNS", "Properties": {"Topic": ALARM_TOPIC}}


def test_functions_read_their_config_from_the_stacks_parameter(sam: Json, cfn: Json) -> None:
    variables = sam["Globals"]["Function"]["Environment"]["Variables"]
    assert variables[CONFIG_PARAM_ENV] == {"Ref": "ConfigParameterName"}
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == observability.NAMESPACE
    parameter_arn = {"Fn::Sub": "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"}
    parameter_arn["Fn::Sub"] += "${ConfigParameterName}"
    for name in functions(sam):
        assert role_actions(cfn, f"{name}Role")["ssm:GetParameter"] == [parameter_arn], name
    assert resources(sam, "AWS::SSM::Parameter")["ConfigParameter"]["Properties"]["Name"] == {
        "Ref": "ConfigParameterName"
    }


def test_timeouts_suit_the_work_and_duration_alarms_fire_before_them(sam: Json) -> None:
    timeouts = {
        folder: resolve(sam, function_for(sam, folder)[1]["Properties"]["Timeout"])
        for folder in function_folders()
    }
    assert timeouts["backup"] == timeouts["verify"] == 900  # the 15-minute limit
    assert resolve(sam, function_for(sam, "backup")[1]["Properties"]["MemorySize"]) >= 1769  # one vCPU
    for name, alarm in resources(sam, "AWS::CloudWatch::Alarm").items():
        properties = alarm["Properties"]
        if properties["MetricName"] != "Duration":
            continue
        function_name = properties["Dimensions"][0]["Value"]["Ref"]
        timeout = resolve(sam, sam["Resources"][function_name]["Properties"]["Timeout"])
        assert resolve(sam, properties["Threshold"]) == pytest.approx(0.9 * timeout * 1000), name


def test_layers_are_built_from_their_folders(sam: Json) -> None:
    layers = resources(sam, "AWS::Serverless::LayerVersion")
    folders = {p.name for p in LAYERS_DIR.iterdir() if p.is_dir()}
    assert {layer["Properties"]["ContentUri"].strip("/") for layer in layers.values()} == {
        f"layers/{folder}" for folder in folders
    }
    drsentry_layer = layers["DrsentryLayer"]
    assert drsentry_layer["Metadata"]["BuildMethod"] == "makefile"
    assert (LAYERS_DIR / "drsentry" / "requirements.txt").is_file()
    assert (LAYERS_DIR / "drsentry" / "drsentry" / "__init__.py").is_file()
    recipe = (LAYERS_DIR / "drsentry" / "Makefile").read_text()
    assert re.search(r"^build-DrsentryLayer:", recipe, re.MULTILINE)
    # the bytecode it compiles is for the functions' Python
    runtime = re.search(r"^RUNTIME_VERSION := (\S+)$", recipe, re.MULTILINE)
    assert runtime is not None and sam["Globals"]["Function"]["Runtime"] == f"python{runtime[1]}"
    assert drsentry_layer["Properties"]["CompatibleRuntimes"] == [sam["Globals"]["Function"]["Runtime"]]
    pgtools = layers["PgToolsLayer"]
    assert pgtools["Metadata"]["BuildMethod"] == "makefile"
    makefile = (LAYERS_DIR / "pgtools" / "Makefile").read_text()
    assert re.search(r"^build-PgToolsLayer:", makefile, re.MULTILINE)  # SAM calls build-<LogicalId>
    assert sam["Globals"]["Function"]["Layers"] == [
        {"Ref": "DrsentryLayer"},
        {"Fn::If": ["BuildPgToolsLayer", {"Ref": "PgToolsLayer"}, {"Ref": "PgToolsLayerArn"}]},
    ]


# Alarms ----------------------------------------------------------------------------------


def alarms(sam: Json) -> dict[str, Json]:
    return {name: a["Properties"] for name, a in resources(sam, "AWS::CloudWatch::Alarm").items()}


def test_every_alarm_watches_a_metric_the_code_emits_or_an_aws_metric(sam: Json) -> None:
    for name, alarm in alarms(sam).items():
        assert "Metrics" not in alarm, f"{name}: the notify function formats single-metric alarms only"
        if alarm["Namespace"] == observability.NAMESPACE:
            assert alarm["MetricName"] in observability.METRIC_NAMES, name
            # The code emits every metric with exactly one dimension, Target.
            assert [d["Name"] for d in alarm["Dimensions"]] == [observability.TARGET_DIMENSION], name
        else:
            assert alarm["Namespace"] in AWS_METRIC_NAMESPACES, name


def test_every_alarm_notifies_the_alerts_topic_on_alarm_and_on_recovery(sam: Json) -> None:
    for name, alarm in alarms(sam).items():
        assert alarm["AlarmActions"] == [ALARM_TOPIC], name
        assert alarm["OKActions"] == [ALARM_TOPIC], name


def test_every_failure_mode_has_an_alarm(sam: Json) -> None:
    drsentry_metrics = {
        a["MetricName"] for a in alarms(sam).values() if a["Namespace"] == observability.NAMESPACE
    }
    assert {
        observability.BACKUP_FAILURE,
        observability.BACKUP_AGE_SECONDS,
        observability.VERIFIED_BACKUP_AGE_SECONDS,
        observability.VERIFICATION_FAILURE,
        observability.RESTORE_SECONDS,
        observability.REPLICA_MISSING,
        observability.REPLICA_MISMATCH,
        observability.REPLICATION_LAG_SECONDS,
        observability.ARCHIVE_FAILURE,
        observability.NOTIFICATION_FAILED,
    } <= drsentry_metrics
    per_function = {
        (a["MetricName"], a["Dimensions"][0]["Value"]["Ref"])
        for a in alarms(sam).values()
        if a["Namespace"] == "AWS/Lambda"
    }
    for function_name in functions(sam):
        for metric in ("Errors", "Throttles", "Duration"):
            assert (metric, function_name) in per_function
    dead_letters = [a for a in alarms(sam).values() if a["Namespace"] == "AWS/SQS"]
    assert [a["Dimensions"][0]["Value"] for a in dead_letters] == [
        {"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}
    ]


def test_thresholds_come_from_the_objectives(sam: Json) -> None:
    by_metric = {
        a["MetricName"]: a for a in alarms(sam).values() if a["Namespace"] == observability.NAMESPACE
    }
    for age_metric in (observability.BACKUP_AGE_SECONDS, observability.VERIFIED_BACKUP_AGE_SECONDS):
        stale = by_metric[age_metric]
        assert stale["Threshold"] == {"Ref": "RpoSeconds"}
        assert stale["TreatMissingData"] == "breaching"  # nothing reported is stale too
    assert by_metric[observability.RESTORE_SECONDS]["Threshold"] == {"Ref": "RtoSeconds"}
    assert by_metric[observability.REPLICATION_LAG_SECONDS]["Threshold"] == {
        "Ref": "MaxReplicationLagSeconds"
    }
    for name, alarm in alarms(sam).items():
        if alarm["Namespace"] == observability.NAMESPACE:
            # notify counts failed alarm posts under NO_TARGET (Lambda and SQS alarms have no target).
            assert alarm["Dimensions"][0]["Value"] in ({"Ref": "AlarmTarget"}, NO_TARGET), name


def test_the_dashboard_shows_age_restore_time_sizes_and_lag(sam: Json) -> None:
    body = resources(sam, "AWS::CloudWatch::Dashboard")["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for metric in (
        observability.BACKUP_AGE_SECONDS,
        observability.RESTORE_SECONDS,
        observability.BACKUP_SIZE_BYTES,
        observability.REPLICATION_LAG_SECONDS,
    ):
        assert f'MetricName=\\"{metric}\\"' in body
    rendered = re.sub(r"\$\{[^}]+\}", "0", body)
    json.loads(rendered)  # valid JSON once CloudFormation substituted the values
    for name in re.findall(r'MetricName=\\"(\w+)\\"', body):
        assert name in observability.METRIC_NAMES


# IAM --------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["template.yaml (transformed)", "infra/replica.yaml"])
def test_no_policy_allows_a_wildcard_action(cfn: Json, replica: Json, which: str) -> None:
    template = cfn if which.startswith("template") else replica
    statements = list(policy_statements(template))
    assert statements
    for name, statement in statements:
        assert "NotAction" not in statement, name
        actions = as_list(statement["Action"])
        assert "*" not in actions, f"{name}: Action '*'"
        if statement["Effect"] == "Allow":
            wildcards = [action for action in actions if "*" in action]
            assert not wildcards, f"{name}: allows {wildcards}"
        else:
            # A deny may cover a whole service (the TLS-only rule denies s3:* over plain HTTP).
            assert all(re.fullmatch(r"[a-z0-9-]+:[A-Za-z*]+", action) for action in actions), name


def test_function_roles_name_their_resources(sam: Json, cfn: Json) -> None:
    for name in functions(sam):
        for statement in walk(role_documents(cfn, f"{name}Role")):
            if isinstance(statement, dict) and statement.get("Effect") == "Allow":
                # The one exception: IAM gives scheduler:ListSchedules no resource type to name.
                if as_list(statement["Action"]) == ["scheduler:ListSchedules"]:
                    continue
                assert "*" not in as_list(statement["Resource"]), f"{name}: {statement}"
        for in_vpc in (False, True):
            assert set(aws_managed_policies(cfn, f"{name}Role", in_vpc)) <= {
                "AWSLambdaBasicExecutionRole",
                "AWSXRayDaemonWriteAccess",
                "AWSLambdaVPCAccessExecutionRole",
            }


def condition_value(sam: Json, node: Any, parameters: dict[str, str]) -> Any:
    """A condition or value of the template under `parameters` (the defaults for the rest);
    just the intrinsics the InVpc condition uses."""
    if isinstance(node, dict) and len(node) == 1:
        ((function, argument),) = node.items()
        if function == "Ref":
            value = parameters.get(argument, default(sam, argument))
            is_list = sam["Parameters"][argument]["Type"].startswith(("List<", "CommaDelimitedList"))
            return value.split(",") if is_list else value
        if function == "Fn::Not":
            return not condition_value(sam, argument[0], parameters)
        if function == "Fn::Equals":
            left, right = (condition_value(sam, side, parameters) for side in argument)
            return left == right
        if function == "Fn::Join":
            separator, values = argument
            return separator.join(condition_value(sam, values, parameters))
    return node


def aws_managed_policies(cfn: Json, role: str, in_vpc: bool) -> list[str]:
    """The names of the AWS managed policies a role attaches, with or without a VPC."""
    names = []
    for listed in cfn["Resources"][role]["Properties"].get("ManagedPolicyArns", []):
        arn = listed
        if isinstance(listed, dict) and "Fn::If" in listed:
            condition, when_true, when_false = listed["Fn::If"]
            assert condition == "InVpc", f"{role}: {listed}"
            arn = when_true if in_vpc else when_false
        if isinstance(arn, dict) and "Ref" in arn:
            continue  # AWS::NoValue, or the stack's own managed policy (role_documents)
        text = arn["Fn::Sub"] if isinstance(arn, dict) else arn
        assert text.startswith("arn:${AWS::Partition}:iam::aws:policy/"), f"{role}: {arn}"
        names.append(text.rsplit("/", 1)[-1])
    return names


@pytest.mark.parametrize("subnets", ["", "subnet-1,subnet-2"], ids=["without-vpc", "in-a-vpc"])
def test_function_roles_hold_the_vpc_access_policy_only_with_subnets(
    sam: Json, cfn: Json, subnets: str
) -> None:
    # Given SubnetIds empty or set, when CloudFormation decides InVpc and creates the roles
    in_vpc = condition_value(sam, sam["Conditions"]["InVpc"], {"SubnetIds": subnets})
    assert in_vpc is bool(subnets)
    lambda_roles = [
        name
        for name, role in resources(cfn, "AWS::IAM::Role").items()
        if "lambda.amazonaws.com" in json.dumps(role["Properties"]["AssumeRolePolicyDocument"])
    ]
    assert sorted(lambda_roles) == sorted(f"{name}Role" for name in functions(sam))
    for role in lambda_roles:
        # then every function logs and traces, and only functions in the VPC may attach to it
        expected = ["AWSLambdaBasicExecutionRole", "AWSXRayDaemonWriteAccess"]
        expected += ["AWSLambdaVPCAccessExecutionRole"] if in_vpc else []
        assert aws_managed_policies(cfn, role, in_vpc) == expected, role
    assert sam["Globals"]["Function"]["Tracing"] == "Active"  # what the X-Ray policy is for


@pytest.mark.parametrize(
    ("folder", "needed", "forbidden"),
    [
        (
            "backup",
            {
                "s3:PutObject",
                "s3:AbortMultipartUpload",
                "s3:PutObjectRetention",
                "sns:Publish",
                "kms:GenerateDataKey",
            },
            # s3:DeleteObject only adds a delete marker (a failed run withdraws its objects);
            # destroying a version takes s3:DeleteObjectVersion.
            {
                "s3:DeleteObjectVersion",
                "s3:RestoreObject",
                "s3:BypassGovernanceRetention",
                "s3:PutBucketObjectLockConfiguration",
                "s3:PutBucketVersioning",
                "s3:PutBucketPolicy",
                "s3:PutBucketLifecycleConfiguration",
            },
        ),
        ("verify", {"s3:GetObject", "s3:RestoreObject", "kms:Decrypt"}, {"s3:PutObject", "s3:DeleteObject"}),
        (
            "archive",
            {"s3:PutObject", "s3:PutObjectRetention", "s3:RestoreObject", "s3:DeleteObjectVersion"},
            {"s3:BypassGovernanceRetention", "s3:PutBucketObjectLockConfiguration"},
        ),
        (
            "replication-check",
            {"s3:GetBucketVersioning", "s3:GetReplicationConfiguration", "s3:GetObject"},
            {"s3:PutObject", "s3:DeleteObject"},
        ),
        ("notify", {"secretsmanager:GetSecretValue", "dynamodb:PutItem"}, {"s3:GetObject", "sns:Publish"}),
    ],
)
def test_each_function_may_do_its_work_and_no_more(
    sam: Json, cfn: Json, folder: str, needed: set[str], forbidden: set[str]
) -> None:
    name, _ = function_for(sam, folder)
    allowed = set(role_actions(cfn, f"{name}Role"))
    assert needed <= allowed, f"{folder} lacks {needed - allowed}"
    assert not forbidden & allowed, f"{folder} may {forbidden & allowed}"


BACKUPS = {"Fn::Sub": "${BackupBucket.Arn}/*"}
REPLICAS = {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ReplicaBucketName}/*"}
ARCHIVES = {"Fn::Sub": "${ArchiveBucket.Arn}/*"}
READ = {"s3:GetObject", "s3:GetObjectVersion"}
READ_TAGS = {"s3:GetObjectTagging", "s3:GetObjectVersionTagging"}
WRITE = {"s3:PutObject", "s3:PutObjectTagging", "s3:PutObjectVersionTagging"}
UPLOADS = {"s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
LOCK = {"s3:GetObjectRetention", "s3:PutObjectRetention"}
DELETE = {"s3:DeleteObject", "s3:DeleteObjectVersion"}


def object_actions(cfn: Json, role: str, objects: Json) -> set[str]:
    """The S3 actions a role may take on the objects `objects` names."""
    return {
        action
        for action, resources in role_actions(cfn, role).items()
        if action.startswith("s3:") and objects in resources
    }


@pytest.mark.parametrize(
    ("folder", "objects", "expected"),
    [
        # creates and locks backups, aborts its uploads; never deletes a version. s3:DeleteObject
        # without a version id adds a delete marker only: how a failed run withdraws its objects
        # (the archive run purges them); S3 destroys a version only with s3:DeleteObjectVersion.
        ("backup", BACKUPS, WRITE | READ | READ_TAGS | UPLOADS | LOCK | {"s3:DeleteObject"}),
        ("backup", REPLICAS, WRITE | {"s3:GetObject"} | READ_TAGS | UPLOADS | LOCK),
        ("backup", ARCHIVES, set()),
        # the only one that deletes (S3 refuses it what is locked) and extends locks
        ("archive", BACKUPS, READ | READ_TAGS | LOCK | DELETE),
        ("archive", REPLICAS, READ | LOCK | DELETE),
        ("archive", ARCHIVES, WRITE | READ | READ_TAGS | LOCK | DELETE | UPLOADS | {"s3:RestoreObject"}),
        ("verify", BACKUPS, READ),
        ("verify", ARCHIVES, READ | {"s3:RestoreObject"}),
        ("replication-check", BACKUPS, READ),
        ("replication-check", REPLICAS, READ | READ_TAGS),
    ],
)
def test_each_role_has_exactly_its_s3_actions_on_backups(
    sam: Json, cfn: Json, folder: str, objects: Json, expected: set[str]
) -> None:
    name, _ = function_for(sam, folder)
    assert object_actions(cfn, f"{name}Role", objects) == expected


def test_nobody_in_the_stack_may_bypass_governance_retention(cfn: Json, replica: Json) -> None:
    for template in (cfn, replica):
        for name, statement in policy_statements(template):
            if statement["Effect"] == "Allow":
                actions = as_list(statement["Action"])
                assert "s3:BypassGovernanceRetention" not in actions, name
                assert not any(action in {"s3:*", "s3:Bypass*"} for action in actions), name


def test_the_primary_and_replica_buckets_have_object_lock_in_the_configured_mode(
    sam: Json, replica: Json
) -> None:
    for template, bucket in ((sam, "BackupBucket"), (replica, "ReplicaBucket")):
        properties = template["Resources"][bucket]["Properties"]
        assert properties["ObjectLockEnabled"] is True
        # no default retention: a failed backup's objects stay removable
        assert properties["ObjectLockConfiguration"] == {"ObjectLockEnabled": "Enabled"}
    mode = sam["Parameters"]["ObjectLockMode"]
    assert (mode["Default"], mode["AllowedValues"]) == ("GOVERNANCE", ["GOVERNANCE", "COMPLIANCE"])
    starter_config = json.dumps(sam["Resources"]["ConfigParameter"]["Properties"]["Value"])
    assert "lock_mode: ${ObjectLockMode}" in starter_config


def test_crr_role_replicates_only_into_the_replica_bucket(cfn: Json) -> None:
    role = cfn["Resources"]["ReplicationRole"]
    assert role["Condition"] == "UseCrr"
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Service": "s3.amazonaws.com"}
    policy = cfn["Resources"]["ReplicationRolePolicy"]["Properties"]["PolicyDocument"]
    replicate = next(s for s in policy["Statement"] if "s3:ReplicateObject" in as_list(s["Action"]))
    assert replicate["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ReplicaBucketName}/*"}
    rule = cfn["Resources"]["BackupBucket"]["Properties"]["ReplicationConfiguration"]["Fn::If"]
    assert rule[0] == "UseCrr"
    assert rule[1]["Role"] == {"Fn::GetAtt": ["ReplicationRole", "Arn"]}


# Storage ----------------------------------------------------------------------------------


def bucket_policies(template: Json) -> dict[str, list[Json]]:
    """Bucket logical name -> its policy statements."""
    return {
        policy["Properties"]["Bucket"]["Ref"]: policy["Properties"]["PolicyDocument"]["Statement"]
        for policy in resources(template, "AWS::S3::BucketPolicy").values()
    }


def all_buckets() -> list[tuple[str, str]]:
    return [("template.yaml", name) for name in resources(load(TEMPLATE), "AWS::S3::Bucket")] + [
        ("infra/replica.yaml", name) for name in resources(load(REPLICA_TEMPLATE), "AWS::S3::Bucket")
    ]


@pytest.mark.parametrize(("source", "bucket"), all_buckets())
def test_every_bucket_is_versioned_kms_encrypted_private_and_tls_only(
    sam: Json, replica: Json, source: str, bucket: str
) -> None:
    template = sam if source == "template.yaml" else replica
    properties = template["Resources"][bucket]["Properties"]
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert "KMSMasterKeyID" in rule["ServerSideEncryptionByDefault"]  # the stack's own key
    assert rule["BucketKeyEnabled"] is True
    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    statements = bucket_policies(template)[bucket]
    tls = [s for s in statements if s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert len(tls) == 1
    assert tls[0]["Effect"] == "Deny" and tls[0]["Principal"] == "*" and tls[0]["Action"] == "s3:*"
    assert tls[0]["Resource"] == [
        {"Fn::GetAtt": [bucket, "Arn"]},
        {"Fn::Sub": "${" + bucket + ".Arn}/*"},
    ]
    lifecycle = {r["Id"]: r for r in properties["LifecycleConfiguration"]["Rules"]}
    abort = lifecycle["abort-incomplete-uploads"]["AbortIncompleteMultipartUpload"]
    assert abort == {"DaysAfterInitiation": 1}


def test_the_archive_bucket_has_object_lock(sam: Json, cfn: Json) -> None:
    archive = sam["Resources"]["ArchiveBucket"]["Properties"]
    assert archive["ObjectLockEnabled"] is True
    assert archive["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    everything_allowed = {
        action
        for _, statement in policy_statements(cfn)
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
    }
    assert "s3:BypassGovernanceRetention" not in everything_allowed  # a lock is never forced
    for bucket in ("ArchiveBucket", "BackupBucket"):
        assert sam["Resources"][bucket]["DeletionPolicy"] == "RetainExceptOnCreate"
        assert sam["Resources"][bucket]["UpdateReplacePolicy"] == "Retain"


def condition_holds(operator: str, key: str, expected: Any, request: dict[str, str]) -> bool:
    """One IAM condition operator against a request's condition keys (what the bucket policy uses)."""
    values = [str(v) for v in as_list(expected)]
    present = key in request
    if operator == "Bool":
        return present and request[key] in values
    if operator == "Null":
        return (not present) == (values == ["true"])
    if operator == "StringEquals":
        return present and request[key] in values
    if operator == "StringNotEquals":
        return not present or request[key] not in values
    if operator == "StringNotEqualsIfExists":
        return present and request[key] not in values
    raise AssertionError(f"the test does not evaluate {operator}")


def denied(statements: list[Json], sam: Json, request: dict[str, str]) -> list[str]:
    """Sids of the deny statements covering s3:PutObject whose conditions all hold for the request."""
    sids = []
    for statement in statements:
        actions = as_list(statement["Action"])
        if statement["Effect"] != "Deny" or not {"s3:PutObject", "s3:*"} & set(actions):
            continue
        conditions = statement.get("Condition", {})
        if all(
            condition_holds(operator, key, resolve(sam, expected), request)
            if not isinstance(expected, list)
            else condition_holds(operator, key, [resolve(sam, v) for v in expected], request)
            for operator, pairs in conditions.items()
            for key, expected in pairs.items()
        ):
            sids.append(statement.get("Sid", "?"))
    return sids


def put_request(headers: dict[str, str]) -> dict[str, str]:
    keys = {
        "ServerSideEncryption": "s3:x-amz-server-side-encryption",
        "SSEKMSKeyId": "s3:x-amz-server-side-encryption-aws-kms-key-id",
    }
    return {"aws:SecureTransport": "true", **{keys[name]: value for name, value in headers.items()}}


@pytest.mark.parametrize("bucket", ["BackupBucket", "ArchiveBucket"])
def test_bucket_policy_accepts_what_drsentry_sends_with_the_stack_key_and_nothing_else(
    sam: Json, bucket: str
) -> None:
    statements = bucket_policies(sam)[bucket]
    stack_alias = default(sam, "KmsAliasName")
    # storage.kms_key as the generated drsentry.yaml writes it: PutObject, CreateMultipartUpload, CopyObject.
    assert denied(statements, sam, put_request(encryption_args(stack_alias))) == []
    # UploadPart carries no encryption headers; neither does a put relying on the bucket default.
    assert denied(statements, sam, put_request({})) == []
    # SSE-S3 (storage.kms_key unset), another key, or aws:kms with the AWS managed key.
    assert denied(statements, sam, put_request(encryption_args(None)))
    assert denied(statements, sam, put_request(encryption_args("alias/someone-elses")))
    assert denied(statements, sam, put_request({"ServerSideEncryption": "aws:kms"}))
    # Plain HTTP is refused whatever the headers.
    plain_http = {**put_request(encryption_args(stack_alias)), "aws:SecureTransport": "false"}
    assert denied(statements, sam, plain_http) == ["DenyInsecureTransport"]


def test_the_replica_stack_outputs_what_the_main_stack_asks_for(sam: Json, replica: Json) -> None:
    for output in ("ReplicaBucketName", "ReplicaRegion", "ReplicaKmsKeyId"):
        assert output in replica["Outputs"]
        assert output in sam["Parameters"]
    assert default(replica, "KmsAliasName") == default(sam, "KmsAliasName")  # one alias, both regions


def test_the_catalog_table_is_the_one_the_code_creates(sam: Json) -> None:
    table = sam["Resources"]["CatalogTable"]["Properties"]
    expected = schema.table_definition("ignored")
    assert table["BillingMode"] == expected["BillingMode"] == "PAY_PER_REQUEST"
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(expected["AttributeDefinitions"], key=str)
    assert table["KeySchema"] == expected["KeySchema"]
    assert table["GlobalSecondaryIndexes"] == expected["GlobalSecondaryIndexes"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": keys.TTL_ATTRIBUTE, "Enabled": True}
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert sam["Resources"]["CatalogTable"]["DeletionPolicy"] == "RetainExceptOnCreate"


def test_the_alerts_topic_is_encrypted_with_a_key_cloudwatch_may_use(sam: Json) -> None:
    topic = sam["Resources"]["AlertsTopic"]["Properties"]
    assert topic["KmsMasterKeyId"] == {"Ref": "BackupKey"}
    key_policy = sam["Resources"]["BackupKey"]["Properties"]["KeyPolicy"]["Statement"]
    cloudwatch = [s for s in key_policy if s.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch and {"kms:Decrypt", "kms:GenerateDataKey"} <= set(cloudwatch[0]["Action"])


# Deployed (moto's CloudFormation, in-process) ----------------------------------------------


def placeholder_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return {}\n")
    return buffer.getvalue()


def upload_artifacts(cfn: Json) -> None:
    """What `sam package` uploads: one zip per function and layer, at the keys the template names."""
    s3: Any = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=ARTIFACT_BUCKET)
    keys = [r["Properties"]["Code"]["S3Key"] for r in resources(cfn, "AWS::Lambda::Function").values()]
    keys += [
        r["Properties"]["Content"]["S3Key"] for r in resources(cfn, "AWS::Lambda::LayerVersion").values()
    ]
    for key in set(keys):
        s3.put_object(Bucket=ARTIFACT_BUCKET, Key=key, Body=placeholder_zip())


def clean_json_like_cloudformation(resource_json: Any, resources_map: Any) -> Any:
    """moto's intrinsic resolver, except that an element of a list that resolves to AWS::NoValue
    is removed, as CloudFormation removes it; moto leaves a null there, which its policy
    validator rejects in a managed policy's conditional statements."""
    cleaned = MOTO_CLEAN_JSON(resource_json, resources_map)
    if isinstance(resource_json, list):
        return [value for value in cleaned if value is not None]
    return cleaned


@pytest.fixture(
    scope="module", params=[{}, FULL_PARAMETERS], ids=["defaults", "replica-crr-vpc"], name="stack"
)
def deployed_stack(
    cfn: Json, request: pytest.FixtureRequest
) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """The stack's parameters and outputs, deployed to moto's CloudFormation.

    moto skips (with a warning) the resource types it lacks, and of a bucket's properties it
    applies only the encryption; versioning, Object Lock and lifecycle are checked above.
    """
    parameters: dict[str, str] = request.param
    with pytest.MonkeyPatch.context() as env, mock_aws(), warnings.catch_warnings():
        env.delenv("AWS_ENDPOINT_URL", raising=False)  # the in-process mock, never a server
        env.setattr(moto_cloudformation_parsing, "clean_json", clean_json_like_cloudformation)
        warnings.filterwarnings("ignore", "Tried to parse .* not supported by moto", UserWarning)
        upload_artifacts(cfn)
        cloudformation: Any = boto3.client("cloudformation", region_name=REGION)
        cloudformation.create_stack(
            StackName="drsentry",
            TemplateBody=json.dumps(cfn),
            Capabilities=["CAPABILITY_IAM"],
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        )
        stack = cloudformation.describe_stacks(StackName="drsentry")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        yield parameters, {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}


def test_deployed_functions_run_the_templates_runtime_and_read_the_config_parameter(
    sam: Json, stack: tuple[dict[str, str], dict[str, str]]
) -> None:
    _, outputs = stack
    lambda_client: Any = boto3.client("lambda", region_name=REGION)
    deployed = {f["FunctionName"]: f for f in lambda_client.list_functions()["Functions"]}
    assert len(deployed) == len(function_folders())
    for name in functions(sam):
        function = deployed[outputs[f"{name}Name"]]
        assert function["Runtime"] == sam["Globals"]["Function"]["Runtime"] == RUNTIME
        assert function["Environment"]["Variables"][CONFIG_PARAM_ENV] == default(sam, "ConfigParameterName")
        assert function["Timeout"] == resolve(sam, sam["Resources"][name]["Properties"]["Timeout"])


def test_the_generated_drsentry_yaml_is_valid_and_names_the_stacks_resources(
    sam: Json, stack: tuple[dict[str, str], dict[str, str]]
) -> None:
    parameters, outputs = stack
    ssm: Any = boto3.client("ssm", region_name=REGION)
    text = ssm.get_parameter(Name=outputs["ConfigParameterName"])["Parameter"]["Value"]

    config = parse_config(text, source=f"ssm:{outputs['ConfigParameterName']}")

    assert config.storage.bucket == outputs["BackupBucketName"]
    assert config.storage.region == REGION
    assert config.storage.kms_key == outputs["KmsAliasName"]
    assert config.storage.archive is not None
    assert config.storage.archive.bucket == outputs["ArchiveBucketName"]
    assert config.catalog.table == outputs["CatalogTableName"]
    assert config.notifications.sns_topic_arn == outputs["AlertsTopicArn"]
    assert config.rpo.total_seconds() == default(sam, "RpoSeconds")
    assert config.rto.total_seconds() == default(sam, "RtoSeconds")
    assert [target.name for target in config.targets] == [default(sam, "AlarmTarget")]
    if parameters:
        assert config.storage.replica is not None
        assert config.storage.replica.bucket == parameters["ReplicaBucketName"]
        assert config.storage.replica.region == parameters["ReplicaRegion"]
        assert config.storage.replica.mode == parameters["ReplicationMode"]
    else:
        assert config.storage.replica is None


def test_the_deployed_catalog_table_and_bucket_are_what_the_code_expects(
    stack: tuple[dict[str, str], dict[str, str]],
) -> None:
    _, outputs = stack
    dynamodb: Any = boto3.client("dynamodb", region_name=REGION)
    table = dynamodb.describe_table(TableName=outputs["CatalogTableName"])["Table"]
    assert table["KeySchema"] == schema.table_definition("x")["KeySchema"]
    assert [index["IndexName"] for index in table["GlobalSecondaryIndexes"]] == [keys.BACKUP_ID_INDEX]
    s3: Any = boto3.client("s3", region_name=REGION)
    (rule,) = s3.get_bucket_encryption(Bucket=outputs["BackupBucketName"])[
        "ServerSideEncryptionConfiguration"
    ]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": outputs["KmsKeyArn"],
    }


# Deployment guards (issue 20) --------------------------------------------------------------

RETAINED = {
    "template.yaml": {"BackupKey", "BackupBucket", "ArchiveBucket", "CatalogTable", "PgToolsLayer"},
    "replica.yaml": {"ReplicaKey", "ReplicaBucket"},
}


@pytest.mark.parametrize("which", ["template.yaml", "replica.yaml"])
def test_retained_resources_survive_updates_but_not_a_failed_first_deploy(
    sam: Json, replica: Json, which: str
) -> None:
    template = sam if which == "template.yaml" else replica
    retained = {
        name
        for name, resource in template["Resources"].items()
        if resource.get("DeletionPolicy", "Delete") != "Delete" or "UpdateReplacePolicy" in resource
    }
    assert retained == RETAINED[which]
    for name in retained:
        # RetainExceptOnCreate: a stack whose first deploy fails leaves no orphan bucket or key behind.
        assert template["Resources"][name]["DeletionPolicy"] == "RetainExceptOnCreate", name
        assert template["Resources"][name]["UpdateReplacePolicy"] == "Retain", name


def test_the_pgtools_layer_version_outlives_the_stack_update_that_replaces_it(cfn: Json) -> None:
    (layer,) = [
        resource
        for resource in resources(cfn, "AWS::Lambda::LayerVersion").values()
        if resource["Properties"]["Content"]["S3Key"] == artifact_key("layers/pgtools/")
    ]
    # SAM gives each new layer content a new logical id, so the old version is *deleted* from
    # the stack on update: only its DeletionPolicy keeps it for other stacks that use its ARN.
    assert layer["DeletionPolicy"] == "RetainExceptOnCreate"
    assert layer["UpdateReplacePolicy"] == "Retain"


def test_functions_and_layers_run_a_python_supported_until_2029(sam: Json) -> None:
    assert sam["Globals"]["Function"]["Runtime"] == RUNTIME
    for name, layer in resources(sam, "AWS::Serverless::LayerVersion").items():
        assert layer["Properties"]["CompatibleRuntimes"] == [RUNTIME], name
    assert not [name for name, f in functions(sam).items() if "Runtime" in f["Properties"]]


@pytest.mark.parametrize("path", [TEMPLATE, REPLICA_TEMPLATE], ids=lambda p: p.name)
def test_arns_name_the_partition_they_are_deployed_in(path: Path) -> None:
    text = path.read_text()
    assert not re.findall(r"arn:aws[a-z-]*:", text.replace("arn:aws[a-z-]*:", ""))


def test_parameters_are_validated_before_anything_is_created(sam: Json) -> None:
    free_text = {
        "DrsentryConfig",
        "ApplicationBucketNames",
        "DatabaseSecretArns",
        "SubnetIds",
        "SecurityGroupIds",
    }
    constraints = {"AllowedValues", "AllowedPattern", "MinValue", "MaxValue"}
    unchecked = [
        name
        for name, parameter in sam["Parameters"].items()
        if name not in free_text and not constraints & set(parameter)
    ]
    assert unchecked == []
    for name, parameter in sam["Parameters"].items():
        if "AllowedPattern" in parameter:
            assert re.fullmatch(parameter["AllowedPattern"], str(parameter["Default"])), name
        if "AllowedValues" in parameter:
            assert parameter["Default"] in parameter["AllowedValues"], name
    # the backup-stale alarm's period is the RPO: CloudWatch takes only multiples of 60 seconds
    assert all(value % 60 == 0 for value in sam["Parameters"]["RpoSeconds"]["AllowedValues"])
    assert re.fullmatch(sam["Parameters"]["BackupSchedule"]["AllowedPattern"], "every hour") is None
    assert re.fullmatch(sam["Parameters"]["PgToolsLayerArn"]["AllowedPattern"], "pgtools") is None


@pytest.mark.parametrize("which", ["template.yaml", "replica.yaml"])
def test_every_checkov_skip_gives_its_reason(sam: Json, replica: Json, which: str) -> None:
    template = sam if which == "template.yaml" else replica
    skips = [
        (name, skip)
        for name, resource in template["Resources"].items()
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", [])
    ]
    assert skips, "make lint runs checkov; its findings are fixed or skipped here"
    for name, skip in skips:
        assert re.fullmatch(r"CKV_AWS_\d+", skip["id"]), name
        assert len(skip.get("comment", "")) > 40, f"{name} skips {skip['id']} without a reason"


def test_log_groups_are_encrypted_with_the_stack_key_which_cloudwatch_logs_may_use(sam: Json) -> None:
    log_groups = resources(sam, "AWS::Logs::LogGroup")
    assert log_groups
    for name, group in log_groups.items():
        assert group["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["BackupKey", "Arn"]}, name
    statements = sam["Resources"]["BackupKey"]["Properties"]["KeyPolicy"]["Statement"]
    (logs,) = [
        s
        for s in statements
        if s["Principal"] == {"Service": {"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}}
    ]
    assert "kms:GenerateDataKey" in logs["Action"]
    (context,) = logs["Condition"]["ArnLike"].values()
    assert context["Fn::Sub"].endswith(":log-group:/drsentry/${AWS::StackName}/*")


def test_the_verify_functions_tmp_is_a_parameter_up_to_lambdas_limit(sam: Json, cfn: Json) -> None:
    # A throwaway verify server's data directory lives in the verify function's /tmp
    parameter = sam["Parameters"]["VerifyEphemeralStorageMB"]
    assert parameter["MinValue"] == 512 and parameter["MaxValue"] == 10240
    verify = cfn["Resources"]["VerifyFunction"]["Properties"]
    assert verify["EphemeralStorage"] == {"Size": {"Ref": "VerifyEphemeralStorageMB"}}
