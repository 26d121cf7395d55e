"""The CLI and the backup Lambda handler as a user and as Lambda run them."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_process import run_cli

from drsentry.core.events import scheduled_event

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).parents[2]


def drsentry(
    *args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, env=env, unset=unset, timeout=120)


def closed_port() -> int:
    """A local port nobody listens on: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_backup_list_and_status_as_json(source_db: str, make_config: Any) -> None:
    # Given a configured stack
    _, path = make_config(source_db)

    # When a backup runs from the command line
    run = drsentry("run", "backup", "--config", str(path), "--json")

    # Then it exits 0 and stdout holds exactly one JSON document with the completed backup
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    backup = result["backups"][0]
    assert backup["status"] == "completed"

    listed = drsentry("backups", "list", "--config", str(path), "--json")
    assert listed.returncode == 0, listed.stderr
    records = json.loads(listed.stdout)
    assert [r["backup_id"] for r in records] == [backup["backup_id"]]
    for field in (
        "target",
        "backup_id",
        "status",
        "started_at",
        "finished_at",
        "duration_seconds",
        "size_bytes",
        "sha256",
        "bucket",
        "key",
        "storage_class",
        "tier",
        "pg_server_version",
        "pg_dump_version",
        "tables",
        "replica",
        "error",
    ):
        assert field in records[0], field

    status = drsentry("status", "--config", str(path), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    (target,) = report["targets"]
    assert target["target"] == "app"
    assert target["newest_backup"]["backup_id"] == backup["backup_id"]
    assert target["rpo_state"] == "ok"


def test_config_from_environment_variable(source_db: str, make_config: Any) -> None:
    _, path = make_config(source_db)
    listed = drsentry("backups", "list", "--json", env={"DRSENTRY_CONFIG": str(path)})
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == []


def test_failed_backup_exits_1_with_the_reason(make_config: Any) -> None:
    _, path = make_config("postgresql://app:pw@127.0.0.1:1/app")
    run = drsentry("run", "backup", "--config", str(path), "--json")
    assert run.returncode == 1
    (backup,) = json.loads(run.stdout)["backups"]
    assert backup["status"] == "failed"
    assert backup["error"].startswith("cannot connect to app@127.0.0.1:1/app")
    assert "Traceback" not in run.stderr


def test_unknown_target_exits_2_with_one_line(source_db: str, make_config: Any) -> None:
    _, path = make_config(source_db)
    run = drsentry("run", "backup", "--config", str(path), "--target", "billing")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: unknown target 'billing' (configured: app)"
    assert run.stdout == ""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("storage: {bucket: abc, region: us-east-1\n", "malformed YAML at line 2"),
        (
            "storage: {bucket: abc, region: us-east-1, colour: blue}\ntargets: [{name: app, dsn: x}]\n",
            "storage.colour: unknown field",
        ),
        (
            "rpo: soon\nstorage: {bucket: abc, region: us-east-1}\ntargets: [{name: app, dsn: x}]\n",
            "rpo: invalid duration 'soon'",
        ),
        (
            "storage: {bucket: abc, region: us-east-1}\n"
            "targets: [{name: app, dsn: x, verify: {scratch_dsn: y, min_size: 1XB}}]\n",
            "targets[0].verify.min_size: invalid size '1XB'",
        ),
    ],
)
def test_bad_config_exits_2_with_one_line_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "drsentry.yaml"
    path.write_text(text)
    for command in (["run", "backup"], ["backups", "list"], ["status", "--json"]):
        run = drsentry(*command, "--config", str(path))
        assert run.returncode == 2
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1, run.stderr
        assert message in lines[0]
        assert str(path) in lines[0]
        assert run.stdout == ""


def test_missing_config_exits_2() -> None:
    run = drsentry("status", unset=("DRSENTRY_CONFIG",))
    assert run.returncode == 2
    assert "no configuration: pass --config PATH or set DRSENTRY_CONFIG" in run.stderr


def test_help_of_each_command_has_an_example() -> None:
    for command in (
        ["run", "backup"],
        ["backups", "list"],
        ["status"],
        ["local", "up"],
        ["local", "env"],
        ["local", "down"],
    ):
        run = drsentry(*command, "--help")
        assert run.returncode == 0
        assert "Example: drsentry" in run.stdout or 'eval "$(drsentry' in run.stdout


# the Lambda handler ---------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    remaining_ms: int = 600_000
    function_name: str = "drsentry-backup"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:drsentry-backup"
    aws_request_id: str = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _load_handler(function: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"handler_{function}", ROOT / "functions" / function / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


@pytest.fixture
def lambda_env(source_db: str, make_config: Any, clients: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The config in an SSM parameter, as the deployed functions read it."""
    config, path = make_config(source_db)
    name = f"/drsentry/config-{config.catalog.table}"
    clients.ssm.put_parameter(Name=name, Value=path.read_text(), Type="String")
    monkeypatch.setenv("DRSENTRY_CONFIG_PARAM", name)
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    return config


def test_backup_handler_runs_a_scheduled_event(lambda_env: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from drsentry.jobs.runtime import build_runtime

    handler = _load_handler("backup")
    result = handler(scheduled_event(), FakeLambdaContext())

    assert result["backups"][0]["status"] == "completed"
    assert build_runtime(lambda_env).catalog.latest_completed("app") is not None
    # EMF metrics with the Target dimension went to stdout for CloudWatch
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith('{"_aws"')]
    names = {
        metric["Name"]
        for doc in emf
        for block in doc["_aws"]["CloudWatchMetrics"]
        for metric in block["Metrics"]
    }
    assert {"BackupSuccess", "BackupSizeBytes", "BackupDurationSeconds"} <= names
    assert all(doc.get("Target") == "app" for doc in emf if "BackupSuccess" in doc)


def test_backup_handler_refuses_an_event_of_the_wrong_shape(lambda_env: Any) -> None:
    from drsentry.core.errors import BadInput

    handler = _load_handler("backup")
    with pytest.raises(BadInput, match="event: "):
        handler({"hello": "world"}, FakeLambdaContext())


def test_backup_handler_retried_event_does_not_double(lambda_env: Any) -> None:
    from drsentry.jobs.runtime import build_runtime

    handler = _load_handler("backup")
    event = scheduled_event()
    first = handler(event, FakeLambdaContext())
    second = handler(event, FakeLambdaContext(aws_request_id="req-2"))

    assert second["backups"][0]["backup_id"] == first["backups"][0]["backup_id"]
    assert len(build_runtime(lambda_env).catalog.list_backups("app")) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "backup", "--bogus"], "error: drsentry run backup: No such option: --bogus"),
        (["verifications", "list", "--days", "1000000000"], "Invalid value for '--days'"),
        (["restore"], "error: drsentry restore: Missing argument 'backup_id'."),
    ],
)
def test_usage_errors_are_one_line_with_exit_2(args: list[str], message: str) -> None:
    run = drsentry(*args)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert message in lines[0]


def test_markup_in_user_input_is_printed_as_it_is(source_db: str, make_config: Any) -> None:
    _, path = make_config(source_db)
    run = drsentry("run", "backup", "--config", str(path), "--target", "[/x]")
    assert run.returncode == 2
    assert run.stderr.strip() == "error: unknown target '[/x]' (configured: app)"


# AWS out of reach: the run's once-per-event record is its first request ---------------

NO_SOURCE = "postgresql://nobody@127.0.0.1:1/none"  # the run stops before any dump


def test_unreachable_aws_endpoint_is_one_line_with_exit_1(make_config: Any) -> None:
    # Given an AWS endpoint on a port nobody listens on
    config, path = make_config(NO_SOURCE)
    endpoint = f"http://127.0.0.1:{closed_port()}"

    # When a backup is run
    run = drsentry("run", "backup", "--config", str(path), env={"AWS_ENDPOINT_URL": endpoint})

    # Then one line names the table and the endpoint: no traceback, exit 1
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith(f"error: catalog table {config.catalog.table!r}: ")
    assert f'Could not connect to the endpoint URL: "{endpoint}/"' in lines[0]
    assert run.stdout == ""


def test_no_aws_credentials_is_one_line_with_exit_2(make_config: Any, tmp_path: Path) -> None:
    # Given no credentials anywhere boto3 looks: environment, files, instance metadata
    _, path = make_config(NO_SOURCE)
    nowhere = str(tmp_path / "no-such-file")

    run = drsentry(
        "run",
        "backup",
        "--config",
        str(path),
        env={
            "AWS_SHARED_CREDENTIALS_FILE": nowhere,
            "AWS_CONFIG_FILE": nowhere,
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"),
    )

    # Then one line says what is missing and how to get it for the local stack: exit 2
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: no AWS credentials found")
    assert 'eval "$(drsentry local env)"' in lines[0]
