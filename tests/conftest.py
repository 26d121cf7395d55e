"""Session fixtures: a real embedded PostgreSQL and moto's server over HTTP.

Both are started here, never assumed to be running. Each test gets its own buckets,
catalog table and topic (unique names), so tests do not see each other's objects.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
}
for _name, _value in TEST_ENV.items():
    os.environ[_name] = _value
# Tests must never reach a real AWS account, whatever the developer's shell holds.
for _name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "DRSENTRY_CONFIG"):
    os.environ.pop(_name, None)

# Secret values the suite creates (database passwords, Slack webhook URLs). After every
# test, no captured log line or output may contain one of them.
KNOWN_SECRETS: set[str] = set()

PRIMARY_REGION = "us-east-1"
REPLICA_REGION = "eu-west-1"


@pytest.fixture(autouse=True)
def no_secret_in_output(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> Iterator[None]:
    """Scan what every test logged and printed for the secrets the suite knows."""
    caplog.set_level(logging.DEBUG, logger="drsentry")
    yield
    captured = capsys.readouterr()
    # Give the test's own output back to pytest's report.
    sys.stdout.write(captured.out)
    sys.stderr.write(captured.err)
    texts = {"log": caplog.text, "stdout": captured.out, "stderr": captured.err}
    for secret in KNOWN_SECRETS:
        for where, text in texts.items():
            assert secret not in text, f"a secret value appeared in the captured {where}"


@pytest.fixture(autouse=True)
def metrics_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    """EMF metrics on, as in Lambda; also undoes the CLI switching them off in-process."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """moto's ThreadedMotoServer on 127.0.0.1; boto3 reaches it through AWS_ENDPOINT_URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        yield endpoint
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        server.stop()


@contextlib.contextmanager
def server_directory(name: str) -> Iterator[Path]:
    """A directory for a server the tests start, outside pytest's temporary root.

    As root, the embedded PostgreSQL runs as another system user, which must be able to
    reach its data directory for as long as it runs. Every pytest session re-applies mode
    0700 to its shared root (/tmp/pytest-of-<user>), so a server kept under it by one
    session PANICs (`pg_control: Permission denied`) the moment a second session starts.
    """
    directory = Path(tempfile.mkdtemp(prefix=f"drsentry-test-{name}-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def embedded_server(name: str) -> Iterator[Any]:
    """A fresh embedded PostgreSQL server for the session, stopped and removed at its end."""
    from drsentry.local import embedded_pg

    with server_directory(name) as directory:
        data_dir = directory / "data"
        server = embedded_pg.start(data_dir)
        KNOWN_SECRETS.add(server.password)
        try:
            yield server
        finally:
            embedded_pg.stop(data_dir)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    with embedded_server("pg") as server:
        yield server


@pytest.fixture(scope="session")
def blank_pg_server() -> Iterator[Any]:
    """A second, brand-new server (only the bootstrap superuser): the "total loss" target."""
    with embedded_server("blank-pg") as server:
        yield server


@pytest.fixture
def admin_dsn(pg_server: Any) -> str:
    return str(pg_server.dsn("postgres"))


@pytest.fixture
def source_db(admin_dsn: str) -> Iterator[str]:
    """A fresh sample application database; its DSN."""
    from drsentry.local.sample import create_sample_database, drop_database

    dbname = f"app_{secrets.token_hex(4)}"
    dsn = create_sample_database(admin_dsn, dbname)
    yield dsn
    drop_database(admin_dsn, dbname)


@pytest.fixture
def clients(aws_endpoint: str) -> Any:
    from drsentry.adapters.aws import AwsClients

    return AwsClients(PRIMARY_REGION)


ConfigFactory = Callable[..., Any]


@pytest.fixture
def make_config(clients: Any, admin_dsn: str, tmp_path: Path) -> ConfigFactory:
    """Build a Config whose AWS resources exist on the moto server; returns (config, path)."""
    from drsentry.core.config import dump_config, parse_config
    from drsentry.local.provision import provision

    def factory(source_dsn: str, **target_overrides: Any) -> Any:
        suffix = secrets.token_hex(4)
        target: dict[str, Any] = {
            "name": "app",
            "dsn": source_dsn,
            "verify": {
                "scratch_dsn": admin_dsn,
                "critical_tables": ["organizations", "profiles", "appointments"],
                "functions": ["book_appointment_with_lock"],
                "rls_tables": ["profiles"],
                "min_size": "1MB",
            },
        }
        target.update(target_overrides)
        raw = {
            "rpo": "1h",
            "rto": "15m",
            "storage": {
                "bucket": f"dr-primary-{suffix}",
                "region": PRIMARY_REGION,
                "prefix": "backups/",
                "replica": {"bucket": f"dr-replica-{suffix}", "region": REPLICA_REGION, "mode": "copy"},
                "archive": {"bucket": f"dr-archive-{suffix}", "storage_class": "DEEP_ARCHIVE"},
            },
            "catalog": {"table": f"catalog-{suffix}"},
            "notifications": {"sns_topic_arn": f"arn:aws:sns:{PRIMARY_REGION}:123456789012:alerts-{suffix}"},
            "targets": [target],
        }
        import yaml

        config = parse_config(yaml.safe_dump(raw))
        provision(config, clients, secret_values={})
        path = tmp_path / f"drsentry-{suffix}.yaml"
        path.write_text(dump_config(config))
        return config, path

    return factory


# moto's server logs every request at INFO; keep test reports readable.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@pytest.fixture
def subscribe_notices() -> Callable[[Any], Callable[[], list[dict[str, Any]]]]:
    """subscribe(runtime): an SQS queue on the runtime's alerts topic; returns a reader of every
    notice received since (JSON of the SNS messages), for runs in this process or the CLI's."""

    def subscribe(runtime: Any) -> Callable[[], list[dict[str, Any]]]:
        sqs = runtime.clients.client("sqs")
        queue_url = sqs.create_queue(QueueName=f"notices-{secrets.token_hex(4)}")["QueueUrl"]
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
        runtime.clients.sns.subscribe(
            TopicArn=str(runtime.config.notifications.sns_topic_arn),
            Protocol="sqs",
            Endpoint=attributes["QueueArn"],
        )
        received: list[dict[str, Any]] = []

        def notices() -> list[dict[str, Any]]:
            while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get(
                "Messages", []
            ):
                for message in batch:
                    received.append(json.loads(json.loads(message["Body"])["Message"]))
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
            return received

        return notices

    return subscribe
