"""The Fargate task's entry point as ECS starts it: its own process, with the environment the
task definition in template.yaml gives the container (parsed from the template, so the two
cannot drift) plus what the state machine's overrides add, against the local stack.

There is no Docker daemon here, so the image itself is not run (hadolint checks infra/Dockerfile);
this runs its ENTRYPOINT. What ECS and the image add beyond the task definition is named below:
the task role's credentials and the local stack's endpoint (AWS), PATH with PostgreSQL's tools
(the image puts apt.postgresql.org's there; here the embedded server's), and PYTHONPATH (the
image pip-installs the package). Nothing else of the test's environment reaches the task.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode

from drsentry.adapters.pgtools import embedded_bin_dir
from drsentry.core.config import dump_config
from drsentry.jobs.runtime import build_runtime

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "Dockerfile"
DEFINITION = ROOT / "infra" / "statemachine" / "run_task.asl.json"
REGION = "us-east-1"


def entry_point() -> list[str]:
    """The image's ENTRYPOINT, with this interpreter for `python`."""
    match = re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match is not None
    command: list[str] = json.loads(match.group(1))
    assert command[0] == "python"
    return [sys.executable, *command[1:]]


def task_environment(family: str, config_parameter: str) -> dict[str, str]:
    """The container's environment in the task definition, CloudFormation's references resolved."""
    template, matches = decode(str(ROOT / "template.yaml"))
    assert not matches
    (container,) = json.loads(json.dumps(template))["Resources"][family]["Properties"]["ContainerDefinitions"]
    references = {"ConfigParameterName": config_parameter, "AWS::Region": REGION}
    environment = {}
    for variable in container["Environment"]:
        value = variable["Value"]
        environment[variable["Name"]] = references[value["Ref"]] if isinstance(value, dict) else value
    return environment


def overrides(run_id: str, reason: str) -> dict[str, str]:
    """The variables the state machine's RunTask overrides, by the names in the definition."""
    definition = json.loads(DEFINITION.read_text())
    override = definition["States"]["RunTask"]["Parameters"]["Overrides"]["ContainerOverrides"][0]
    paths = {variable["Name"]: variable["Value.$"] for variable in override["Environment"]}
    values = {"$.run_id": run_id, "$.reason": reason}
    return {name: values[path] for name, path in paths.items()}


def run_task(job: str, target: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    pg_bin = embedded_bin_dir()
    assert pg_bin is not None
    given_by_ecs_and_the_image = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_ENDPOINT_URL": os.environ["AWS_ENDPOINT_URL"],
        "PATH": f"{pg_bin}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(ROOT / "layers" / "drsentry"),
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    return subprocess.run(
        [*entry_point(), job, "--target", target],
        env={**given_by_ecs_and_the_image, **environment},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def stack_config(make_config: Any, clients: Any) -> Any:
    """A config on the local stack, stored in its SSM parameter as a stack stores it."""

    def store(source_dsn: str) -> tuple[Any, str]:
        config, _ = make_config(source_dsn)
        parameter = f"/drsentry/task-{secrets.token_hex(4)}/config"
        clients.ssm.put_parameter(Name=parameter, Value=dump_config(config), Type="String")
        return config, parameter

    return store


def test_the_backup_task_writes_a_completed_record_with_its_run_id_and_runner(
    stack_config: Any, source_db: str
) -> None:
    config, parameter = stack_config(source_db)
    run_id = secrets.token_hex(16)
    reason = "auto: the newest dump is 2.5 GB, over 2 GB"
    environment = task_environment("BackupTaskDefinition", parameter)
    environment.update(overrides(run_id, reason))

    finished = run_task("backup", "app", environment)

    assert finished.returncode == 0, finished.stderr[-2000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    [backup] = result["backups"]
    assert backup["status"] == "completed"
    runtime = build_runtime(config)
    [record] = runtime.catalog.list_backups("app")
    assert (record.backup_id, record.run_id) == (backup["backup_id"], run_id)
    assert record.runner is not None
    assert (record.runner.name, record.runner.reason) == ("fargate", reason)
    stored = runtime.clients.s3().head_object(Bucket=record.bucket, Key=record.key)
    assert stored["ContentLength"] == record.size_bytes


def test_a_backup_task_whose_database_is_down_exits_1_after_recording_the_failure(stack_config: Any) -> None:
    config, parameter = stack_config("postgresql://nobody@127.0.0.1:1/none")
    run_id = secrets.token_hex(16)
    environment = task_environment("BackupTaskDefinition", parameter)
    environment.update(overrides(run_id, "runner: fargate in the configuration"))

    finished = run_task("backup", "app", environment)

    assert finished.returncode == 1
    [record] = build_runtime(config).catalog.list_backups("app")
    # The run id the state machine's failure step looks for: it will add nothing.
    assert (record.status, record.run_id) == ("failed", run_id)


def test_an_unknown_target_is_one_line_and_exit_2(stack_config: Any) -> None:
    _, parameter = stack_config("postgresql://nobody@127.0.0.1:1/none")
    environment = task_environment("VerifyTaskDefinition", parameter)
    environment.update(overrides(secrets.token_hex(16), "test"))

    finished = run_task("verify", "nope", environment)

    assert finished.returncode == 2
    assert finished.stderr.strip().splitlines() == ["error: unknown target 'nope' (configured: app)"]
