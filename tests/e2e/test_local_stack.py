"""`drsentry local up|env|down` on a real moto server, embedded PostgreSQL and Slack sink.

The stack is started once for the module; the last test stops it (teardown stops it again,
which must be a no-op).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from cli_process import run_cli
from psycopg.conninfo import make_conninfo

from conftest import server_directory
from drsentry.adapters.aws import AwsClients
from drsentry.core.config import load_config
from drsentry.core.errors import BadInput
from drsentry.local import stack
from drsentry.local.sample import SAMPLE_FUNCTION, SAMPLE_TABLES, with_dbname

pytestmark = pytest.mark.e2e

_AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    saved_env = {name: os.environ.get(name) for name in _AWS_ENV}
    with server_directory("local-stack") as directory:
        try:
            stack.up(directory)
            yield directory
        finally:
            stack.down(directory)
            # `up` points this process's boto3 at its moto server; other tests bring their own.
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="module")
def document(state_dir: Path) -> dict[str, str]:
    return stack.up(state_dir)


def _state(state_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads((state_dir / stack.STATE_FILE).read_text())
    return state


def _pids(state_dir: Path) -> dict[str, int]:
    state = _state(state_dir)
    pids = {name: record["pid"] for name, record in state["processes"].items()}
    pids["postgres"] = state["postgres"]["pid"]
    return pids


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    # A zombie that its parent has not reaped yet has stopped running all the same.
    return not (stat.exists() and stat.read_text().rpartition(")")[2].split()[:1] == ["Z"])


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while _exists(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _exists(pid)


def test_up_returns_the_four_paths_and_endpoints(document: dict[str, str]) -> None:
    assert set(document) == {"aws_endpoint_url", "pg_dsn", "config", "slack_log"}
    assert document["aws_endpoint_url"].startswith("http://127.0.0.1:")
    assert document["pg_dsn"].startswith("postgresql://postgres:")
    assert Path(document["config"]).is_absolute()
    assert Path(document["config"]).is_file()
    assert Path(document["slack_log"]).is_absolute()


def test_config_names_the_sample_database_with_a_full_verify_section(document: dict[str, str]) -> None:
    config = load_config(document["config"])

    (target,) = config.targets
    assert target.name == "app"
    assert target.dsn_secret == "drsentry/app-db"
    assert target.verify is not None
    # no scratch server named: verify's default, a blank throwaway server per run
    assert target.verify.scratch_dsn is None and target.verify.scratch_dsn_secret is None
    assert target.verify.standing_scratch is False
    assert target.verify.critical_tables == ["organizations", "profiles", "appointments"]
    assert target.verify.functions == [SAMPLE_FUNCTION]
    assert target.verify.rls_tables == ["profiles"]
    assert [assertion.severity for assertion in target.verify.assertions] == ["warning"]
    assert config.storage.replica is not None
    assert config.storage.replica.region == "eu-west-1"
    assert config.storage.archive is not None
    assert config.notifications.slack_webhook_secret == "drsentry/slack"


def test_state_file_is_readable_by_its_owner_only(state_dir: Path, document: dict[str, str]) -> None:
    assert (state_dir / stack.STATE_FILE).stat().st_mode & 0o777 == 0o600


def test_moto_holds_what_the_config_names(document: dict[str, str]) -> None:
    config = load_config(document["config"])
    clients = AwsClients("us-east-1")
    assert clients.s3().meta.endpoint_url == document["aws_endpoint_url"]

    buckets = {bucket["Name"] for bucket in clients.s3().list_buckets()["Buckets"]}
    assert {"drsentry-local-backups", "drsentry-local-replica", "drsentry-local-archive"} <= buckets
    versioning = clients.s3().get_bucket_versioning(Bucket=config.storage.bucket)
    assert versioning["Status"] == "Enabled"
    lock = clients.s3().get_object_lock_configuration(Bucket="drsentry-local-archive")
    assert lock["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    table = clients.dynamodb.describe_table(TableName=config.catalog.table)
    assert table["Table"]["TableStatus"] == "ACTIVE"
    topics = {topic["TopicArn"] for topic in clients.sns.list_topics()["Topics"]}
    assert config.notifications.sns_topic_arn in topics
    for name in ("drsentry/app-db", "drsentry/scratch", "drsentry/slack"):
        assert clients.secretsmanager.get_secret_value(SecretId=name)["SecretString"]


def test_app_secret_reaches_the_sample_database(document: dict[str, str]) -> None:
    secret = json.loads(
        AwsClients("us-east-1").secretsmanager.get_secret_value(SecretId="drsentry/app-db")["SecretString"]
    )
    dsn = make_conninfo(
        host=secret["host"],
        port=secret["port"],
        user=secret["username"],
        password=secret["password"],
        dbname=secret["dbname"],
    )

    with psycopg.connect(dsn) as conn:
        tables = {
            row[0] for row in conn.execute("select tablename from pg_tables where schemaname = 'public'")
        }
        organizations = conn.execute("select count(*) from organizations").fetchone()

    assert set(SAMPLE_TABLES) <= tables
    assert organizations is not None
    assert organizations[0] > 0


def test_scratch_secret_names_the_postgres_database_of_the_same_server(document: dict[str, str]) -> None:
    secret = json.loads(
        AwsClients("us-east-1").secretsmanager.get_secret_value(SecretId="drsentry/scratch")["SecretString"]
    )

    assert secret["dbname"] == "postgres"
    assert secret["port"] == _port_of(document["pg_dsn"])
    with psycopg.connect(with_dbname(document["pg_dsn"], "postgres")) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_slack_secret_points_at_the_sink_which_records_posts(document: dict[str, str]) -> None:
    url = AwsClients("us-east-1").secretsmanager.get_secret_value(SecretId="drsentry/slack")["SecretString"]
    request = urllib.request.Request(
        url, data=json.dumps({"text": "drill"}).encode(), headers={"Content-Type": "application/json"}
    )

    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200

    posts = [json.loads(line) for line in Path(document["slack_log"]).read_text().splitlines()]
    assert {"path": "/services/T000/B000/local", "payload": {"text": "drill"}} in posts


def test_second_up_returns_the_same_document_and_starts_nothing(
    state_dir: Path, document: dict[str, str]
) -> None:
    pids_before = _pids(state_dir)

    again = stack.up(state_dir)

    assert again == document
    assert _pids(state_dir) == pids_before


def test_up_restarts_only_the_process_that_died(state_dir: Path, document: dict[str, str]) -> None:
    pids_before = _pids(state_dir)
    os.kill(pids_before["slack-sink"], signal.SIGKILL)
    assert _wait_gone(pids_before["slack-sink"])

    again = stack.up(state_dir)

    pids_after = _pids(state_dir)
    assert again["slack_log"] == document["slack_log"]
    assert pids_after["slack-sink"] != pids_before["slack-sink"]
    assert pids_after["moto"] == pids_before["moto"]
    assert pids_after["postgres"] == pids_before["postgres"]
    assert _answers(_state(state_dir)["processes"]["slack-sink"]["port"])


def test_up_provisions_again_after_moto_died(state_dir: Path, document: dict[str, str]) -> None:
    moto_pid = _pids(state_dir)["moto"]
    os.kill(moto_pid, signal.SIGKILL)
    assert _wait_gone(moto_pid)

    again = stack.up(state_dir)

    assert _pids(state_dir)["moto"] != moto_pid
    assert again["aws_endpoint_url"] == document["aws_endpoint_url"]  # same port: exported env stays valid
    buckets = {bucket["Name"] for bucket in AwsClients("us-east-1").s3().list_buckets()["Buckets"]}
    assert "drsentry-local-backups" in buckets
    secret = AwsClients("us-east-1").secretsmanager.get_secret_value(SecretId="drsentry/app-db")
    assert json.loads(secret["SecretString"])["dbname"] == "app"


def test_env_lines_export_the_endpoint_credentials_and_config(
    document: dict[str, str], state_dir: Path
) -> None:
    lines = stack.env_lines(state_dir)

    assert lines == [
        f"export AWS_ENDPOINT_URL={document['aws_endpoint_url']}",
        "export AWS_ACCESS_KEY_ID=testing",
        "export AWS_SECRET_ACCESS_KEY=testing",
        "export AWS_DEFAULT_REGION=us-east-1",
        f"export DRSENTRY_CONFIG={document['config']}",
    ]


def test_down_stops_everything_and_a_second_down_is_a_no_op(
    state_dir: Path, document: dict[str, str]
) -> None:
    pids = _pids(state_dir)
    state = _state(state_dir)
    ports = [record["port"] for record in state["processes"].values()] + [state["postgres"]["port"]]

    stopped = stack.down(state_dir)

    assert sorted(stopped) == ["moto", "postgres", "slack-sink"]
    for pid in pids.values():
        assert _wait_gone(pid), f"pid {pid} still runs"
    for port in ports:
        assert not _answers(port), f"port {port} still answers"
    with pytest.raises(BadInput, match="local stack is not running"):
        stack.env_lines(state_dir)
    assert stack.down(state_dir) == []


def test_env_lines_refuse_a_directory_where_nothing_was_started(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match=r"run `drsentry local up`"):
        stack.env_lines(tmp_path)


@pytest.fixture
def broken_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A state dir for an `up` that fails; everything it did start is stopped afterwards."""
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    try:
        yield tmp_path
    finally:
        stack.down(tmp_path)


def test_up_names_the_log_of_a_process_that_exits_at_start(
    broken_state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash = "import sys; print('cannot bind 127.0.0.1'); sys.exit(3)"
    monkeypatch.setitem(stack._SERVICES, "moto", lambda port, state_dir: [sys.executable, "-c", crash])

    with pytest.raises(stack.LocalStackError) as failure:
        stack.up(broken_state_dir)

    message = str(failure.value)
    assert "moto exited with code 3" in message
    assert "cannot bind 127.0.0.1" in message
    assert str(broken_state_dir / "moto.log") in message


def test_up_names_the_log_of_a_process_that_never_answers(
    broken_state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    silent = "import time; time.sleep(60)"
    monkeypatch.setitem(stack._SERVICES, "slack-sink", lambda port, state_dir: [sys.executable, "-c", silent])
    monkeypatch.setattr(stack, "READY_TIMEOUT_SECONDS", 0.5)

    with pytest.raises(
        stack.LocalStackError, match=r"slack-sink did not answer .* within 0\.5s; see .*slack-sink\.log"
    ):
        stack.up(broken_state_dir)

    # The silent process was recorded, so `down` stops it.
    assert "slack-sink" in stack.down(broken_state_dir)


# one stack per checkout ------------------------------------------------------------------


def _drsentry(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`drsentry ARGS` as a user's shell in `cwd` runs it: its own process, nothing of this one's AWS."""
    unset = (*_AWS_ENV, "DRSENTRY_LOCAL_DIR", "DRSENTRY_CONFIG", "XDG_STATE_HOME", "HOME")
    return run_cli(*args, env=env, unset=unset, cwd=cwd)


def _up(cwd: Path, env: dict[str, str]) -> dict[str, str]:
    run = _drsentry("local", "up", "--json", cwd=cwd, env=env)
    assert run.returncode == 0, run.stderr
    document: dict[str, str] = json.loads(run.stdout)
    return document


def _bucket_names(endpoint: str) -> set[str]:
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint)
    return {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}


def test_two_checkouts_get_two_stacks_and_one_down_leaves_the_other_running() -> None:
    # Given two checkouts of one user (one HOME), each starting "its" stack the README's way,
    # the first from a subdirectory
    with (
        server_directory("checkout-a") as checkout_a,
        server_directory("checkout-b") as checkout_b,
        server_directory("home") as home,
    ):
        for checkout in (checkout_a, checkout_b):
            (checkout / ".git").mkdir()
        (checkout_a / "infra").mkdir()
        user = {"HOME": str(home)}
        try:
            stack_a = _up(checkout_a / "infra", user)
            stack_b = _up(checkout_b, user)

            # Then each stack lives at its checkout's root, on ports of its own
            assert Path(stack_a["config"]) == checkout_a / ".drsentry" / "local" / stack.CONFIG_FILE
            assert Path(stack_b["config"]) == checkout_b / ".drsentry" / "local" / stack.CONFIG_FILE
            assert stack_a["aws_endpoint_url"] != stack_b["aws_endpoint_url"]
            assert _port_of(stack_a["pg_dsn"]) != _port_of(stack_b["pg_dsn"])

            # When the first checkout takes its stack down
            down_a = _drsentry("local", "down", cwd=checkout_a, env=user)

            # Then its processes are gone, and the second stack still answers: its moto with its
            # buckets, its PostgreSQL with the sample database, `local env` with its exports
            assert down_a.returncode == 0, down_a.stderr
            assert "stopped: " in down_a.stdout
            assert not _answers(_port_of(stack_a["aws_endpoint_url"]))
            assert not _answers(_port_of(stack_a["pg_dsn"]))
            assert "drsentry-local-backups" in _bucket_names(stack_b["aws_endpoint_url"])
            with psycopg.connect(with_dbname(stack_b["pg_dsn"], "app")) as conn:
                organizations = conn.execute("select count(*) from organizations").fetchone()
            assert organizations is not None
            assert organizations[0] > 0
            env_b = _drsentry("local", "env", cwd=checkout_b, env=user)
            assert env_b.returncode == 0, env_b.stderr
            assert f"export AWS_ENDPOINT_URL={stack_b['aws_endpoint_url']}" in env_b.stdout.splitlines()
        finally:
            for checkout in (checkout_a, checkout_b):
                _drsentry("local", "down", cwd=checkout, env=user)


def test_up_after_down_starts_from_nothing() -> None:
    with server_directory("again") as directory:
        env = {"DRSENTRY_LOCAL_DIR": str(directory), "HOME": str(directory)}
        try:
            # Given a stack whose server holds a restored database and a table added to the sample,
            # and whose Slack sink received a post
            first = _up(directory, env)
            with psycopg.connect(with_dbname(first["pg_dsn"], "postgres"), autocommit=True) as conn:
                conn.execute("create database restored_app")
            with psycopg.connect(with_dbname(first["pg_dsn"], "app"), autocommit=True) as conn:
                conn.execute("create table added_before_down (id int)")
            sink_port = json.loads((directory / stack.STATE_FILE).read_text())["processes"]["slack-sink"][
                "port"
            ]
            request = urllib.request.Request(
                f"http://127.0.0.1:{sink_port}/services/T000/B000/local",
                data=json.dumps({"text": "backup failed"}).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                assert response.status == 200

            # When the stack goes down and comes up again
            down = _drsentry("local", "down", cwd=directory, env=env)
            assert down.returncode == 0, down.stderr
            assert not (directory / stack.PG_DIR).exists()
            again = _up(directory, env)

            # Then it is as new: the catalog (moto's, in memory) is empty, and so is what would have
            # contradicted it: no database from before, the sample as created, no Slack post
            dynamodb = boto3.client(
                "dynamodb", region_name="us-east-1", endpoint_url=again["aws_endpoint_url"]
            )
            assert dynamodb.scan(TableName=stack.CATALOG_TABLE)["Count"] == 0
            with psycopg.connect(with_dbname(again["pg_dsn"], "postgres")) as conn:
                databases = {row[0] for row in conn.execute("select datname from pg_database")}
            assert "restored_app" not in databases
            assert "app" in databases
            with psycopg.connect(with_dbname(again["pg_dsn"], "app")) as conn:
                added = conn.execute("select to_regclass('public.added_before_down')").fetchone()
            assert added == (None,)
            assert not Path(again["slack_log"]).exists() or Path(again["slack_log"]).read_text() == ""
        finally:
            _drsentry("local", "down", cwd=directory, env=env)
