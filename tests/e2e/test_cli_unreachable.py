"""Every command that talks to AWS fails with one line, never a traceback, when AWS cannot be
reached (exit 1) or there are no credentials (exit 2)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest
import yaml
from cli_process import run_cli

pytestmark = pytest.mark.e2e

BACKUP_ID = "20261122T180000042Z-1a2b3c4d"
# Nothing listens on the database either: commands that reach PostgreSQL before AWS fail
# there first, which is not what these tests are about.
COMMANDS = {
    "run backup": ["run", "backup"],
    "run verify": ["run", "verify"],
    "run archive": ["run", "archive"],
    "run replication-check": ["run", "replication-check"],
    "status": ["status"],
    "backups list": ["backups", "list"],
    "verifications list": ["verifications", "list"],
    "restore": ["restore", BACKUP_ID, "--to", "postgresql://u:p@127.0.0.1:1/empty", "--yes"],
    "drill": ["drill"],
    "catalog rebuild": ["catalog", "rebuild"],
    "storage restore-list": ["storage", "restore-list", BACKUP_ID, "--bucket", "uploads"],
}
NO_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("unreachable") / "drsentry.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "rpo": "1h",
                "rto": "15m",
                "storage": {
                    "bucket": "dr-primary",
                    "region": "us-east-1",
                    "replica": {"bucket": "dr-replica", "region": "eu-west-1", "mode": "copy"},
                    "archive": {"bucket": "dr-archive"},
                },
                "catalog": {"table": "drsentry-catalog"},
                "notifications": {"sns_topic_arn": "arn:aws:sns:us-east-1:123456789012:alerts"},
                "targets": [
                    {
                        "name": "app",
                        "dsn": "postgresql://u:p@127.0.0.1:1/app",
                        "verify": {"scratch_dsn": "postgresql://u:p@127.0.0.1:1/postgres"},
                        "storage": [{"bucket": "uploads", "region": "us-east-1"}],
                    }
                ],
            }
        )
    )
    return path


def drsentry(
    args: list[str], config: Path, env: dict[str, str], unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return run_cli(
        *args, env={**env, "DRSENTRY_CONFIG": str(config), "AWS_MAX_ATTEMPTS": "1"}, unset=unset, timeout=120
    )


def assert_one_line(run: subprocess.CompletedProcess[str], code: int) -> str:
    assert "Traceback" not in run.stderr, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: "), run.stderr
    assert run.returncode == code, run.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_aws_unreachable_is_one_line_and_exit_1(command: list[str], config_path: Path) -> None:
    # Given an AWS endpoint nobody answers on
    endpoint = f"http://127.0.0.1:{closed_port()}"
    # When the command runs
    run = drsentry(command, config_path, {"AWS_ENDPOINT_URL": endpoint})
    # Then one line says what could not be reached, and the exit code is 1
    line = assert_one_line(run, 1)
    assert f'Could not connect to the endpoint URL: "{endpoint}/' in line, line


@pytest.mark.parametrize("command", COMMANDS.values(), ids=COMMANDS.keys())
def test_no_credentials_is_one_line_and_exit_2(command: list[str], config_path: Path, tmp_path: Path) -> None:
    # Given no AWS credentials anywhere boto3 looks
    nowhere = str(tmp_path / "no-such-file")
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_CONFIG_FILE": nowhere,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed_port()}",
    }
    # When the command runs
    run = drsentry(command, config_path, env, unset=NO_CREDENTIALS)
    # Then one line says so, with the usage exit code
    line = assert_one_line(run, 2)
    assert "credentials" in line, line
