"""Alerts that reach people: SNS (read back through an SQS subscription on the moto server)
and Slack (a real HTTP sink), for failures, warnings, recoveries, repeats and outages."""

from __future__ import annotations

import importlib.util
import json
import logging
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities import parameters
from fault_proxy import FaultProxy, Request, Rule

from conftest import KNOWN_SECRETS
from drsentry.adapters.aws import AwsClients
from drsentry.adapters.table import Catalog
from drsentry.core.config import Config, dump_config, parse_config
from drsentry.core.observability import logger as drsentry_logger
from drsentry.core.records import RunNotice
from drsentry.jobs.notify.notifier import Notifier
from drsentry.jobs.notify.topic import handle_topic_message
from drsentry.local.provision import provision
from drsentry.local.slack_sink import SlackSink

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
START = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
CHECKS = ["critical tables", "row counts"]


# Fixtures and helpers ----------------------------------------------------------------


class Clock:
    """The notifier's clock, moved by the test instead of by waiting."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class Topic:
    """The alerts topic as a subscriber sees it: an SQS queue subscribed to it."""

    arn: str
    queue_url: str
    sqs: Any

    def messages(self) -> list[dict[str, Any]]:
        """SNS envelopes received so far (each has ``Message`` and ``MessageAttributes``)."""
        envelopes: list[dict[str, Any]] = []
        while True:
            response = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
            batch = response.get("Messages", [])
            if not batch:
                return envelopes
            for message in batch:
                envelopes.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def notices(self) -> list[dict[str, Any]]:
        return [json.loads(envelope["Message"]) for envelope in self.messages()]


def build_config(
    *,
    topic_arn: str,
    table: str,
    slack_webhook_url: str | None = None,
    slack_webhook_secret: str | None = None,
) -> Config:
    notifications: dict[str, Any] = {"sns_topic_arn": topic_arn, "repeat_after": "6h"}
    if slack_webhook_url:
        notifications["slack_webhook_url"] = slack_webhook_url
    if slack_webhook_secret:
        notifications["slack_webhook_secret"] = slack_webhook_secret
    raw = {
        "storage": {"bucket": f"dr-alerts-{table}", "region": REGION},
        "catalog": {"table": table},
        "notifications": notifications,
        "targets": [{"name": "app", "dsn": "postgresql://app@localhost/app"}],
    }
    return parse_config(json.dumps(raw))


@dataclass
class Alerts:
    """The notification stack of one test: moto, a Slack sink, a subscribed topic, a clock."""

    clients: AwsClients
    slack: SlackSink
    topic: Topic
    clock: Clock
    posts_before: int  # the sink serves the whole module; earlier tests' posts are not ours

    def posts(self) -> list[dict[str, Any]]:
        """Slack posts received during this test, in order."""
        return self.slack.posts[self.posts_before :]

    def config(self, secret_values: dict[str, Any] | None = None, **slack_source: str) -> Config:
        """A provisioned Config (own catalog table) posting to the sink unless told otherwise."""
        if not slack_source:
            slack_source = {"slack_webhook_url": self.slack.url}
        config = build_config(
            topic_arn=self.topic.arn, table=f"catalog-{secrets.token_hex(4)}", **slack_source
        )
        provision(config, self.clients, secret_values=secret_values or {})
        return config

    def notifier(self, config: Config | None = None, slack_timeout: float = 2.0) -> Notifier:
        config = config or self.config()
        return Notifier(
            config,
            self.clients,
            alert_states=Catalog(self.clients.dynamodb, config.catalog.table).alert_states,
            clock=self.clock,
            slack_timeout=slack_timeout,
        )

    def headers(self) -> list[str]:
        """The header line of every Slack post received, in order."""
        return [post["blocks"][0]["text"]["text"] for post in self.posts()]


def subscribed_topic(clients: AwsClients) -> Topic:
    suffix = secrets.token_hex(4)
    arn = clients.sns.create_topic(Name=f"alerts-{suffix}")["TopicArn"]
    sqs = clients.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"alerts-subscriber-{suffix}")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    clients.sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=attributes["QueueArn"])
    return Topic(arn=arn, queue_url=queue_url, sqs=sqs)


@pytest.fixture(scope="module")
def slack_sink() -> Iterator[SlackSink]:
    # One sink for the module: stopping a sink waits out its poll interval (0.5 s).
    with SlackSink() as sink:
        KNOWN_SECRETS.add(sink.url)  # the webhook URL is a secret: never in a log line or output
        yield sink
        KNOWN_SECRETS.discard(sink.url)


@pytest.fixture
def alerts(clients: AwsClients, slack_sink: SlackSink) -> Alerts:
    slack_sink.fail_with(200)
    return Alerts(
        clients=clients,
        slack=slack_sink,
        topic=subscribed_topic(clients),
        clock=Clock(),
        posts_before=len(slack_sink.posts),
    )


def verify_notice(severity: str = "critical", **overrides: Any) -> RunNotice:
    status = {"critical": "failure", "warning": "warning", "info": "success"}[severity]
    fields: dict[str, Any] = {
        "source": "verify",
        "target": "app",
        "severity": severity,
        "status": status,
        "summary": f"verification of 20261122T110000Z-0a1b2c3d: {status}",
        "details": {"backup_id": "20261122T110000Z-0a1b2c3d", "restore_seconds": 40, "rto_seconds": 900},
        "run_id": secrets.token_hex(8),
    }
    fields.update(overrides)
    return RunNotice.model_validate(fields)


def slack_text(post: dict[str, Any]) -> str:
    return json.dumps(post, ensure_ascii=False)


def closed_port_url() -> str:
    """A webhook URL on a local port nobody listens on: connection refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/T000/B000/refused"


def emitted_metrics(stdout: str) -> list[tuple[str, str]]:
    """(metric name, Target) of every EMF document printed."""
    found: list[tuple[str, str]] = []
    for line in stdout.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        document = json.loads(line)
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                found.append((metric["Name"], document.get("Target", "")))
    return found


# Failures, warnings, recoveries and repeats ---------------------------------------------


def test_failure_posts_one_slack_alert_and_one_sns_message(alerts: Alerts) -> None:
    # Given a configured Slack webhook and a subscriber on the topic
    notifier = alerts.notifier()

    # When a verification fails two checks
    delivery = notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # Then Slack shows one failure naming the target, the checks and the backup
    assert delivery.ok
    assert alerts.headers() == [":red_circle: Verification failed: app"]
    assert "critical tables, row counts" in slack_text(alerts.posts()[0])
    assert "20261122T110000Z-0a1b2c3d" in slack_text(alerts.posts()[0])
    # And the topic got the notice as JSON, with the attributes filter policies use
    [envelope] = alerts.topic.messages()
    notice = json.loads(envelope["Message"])
    assert (notice["source"], notice["target"], notice["severity"], notice["status"]) == (
        "verify",
        "app",
        "critical",
        "failure",
    )
    assert envelope["MessageAttributes"]["severity"]["Value"] == "critical"
    assert envelope["MessageAttributes"]["source"]["Value"] == "verify"
    assert envelope["MessageId"] == delivery.sns_message_id


def test_warning_posts_a_warning(alerts: Alerts) -> None:
    alerts.notifier().send(verify_notice("warning"), failing_checks=["recent rows"])

    assert alerts.headers() == [":warning: Verification warning: app"]
    assert "recent rows" in slack_text(alerts.posts()[0])
    [envelope] = alerts.topic.messages()
    assert envelope["MessageAttributes"]["severity"]["Value"] == "warning"


def test_first_success_after_a_failure_posts_recovered_once(alerts: Alerts) -> None:
    # Given a failure Slack was told about
    notifier = alerts.notifier()
    notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # When the next two runs succeed
    alerts.clock.advance(timedelta(hours=1))
    notifier.send(verify_notice("info"))
    alerts.clock.advance(timedelta(hours=1))
    notifier.send(verify_notice("info"))

    # Then Slack got the failure and one recovery; the topic got all three runs
    assert alerts.headers() == [
        ":red_circle: Verification failed: app",
        ":white_check_mark: Verification recovered: app",
    ]
    assert [notice["severity"] for notice in alerts.topic.notices()] == ["critical", "info", "info"]


def test_success_with_no_earlier_failure_posts_nothing_to_slack(alerts: Alerts) -> None:
    delivery = alerts.notifier().send(verify_notice("info"))

    assert delivery.slack == "nothing-to-say"
    assert alerts.posts() == []
    assert [notice["status"] for notice in alerts.topic.notices()] == ["success"]


def test_same_failure_is_not_repeated_to_slack_before_repeat_after(alerts: Alerts) -> None:
    # Given a failure Slack was told about
    notifier = alerts.notifier()
    notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # When the same checks fail on the next five hourly runs, reported in another order
    for _ in range(5):
        alerts.clock.advance(timedelta(hours=1))
        notifier.send(verify_notice("critical"), failing_checks=list(reversed(CHECKS)))

    # Then Slack heard it once, and every run still reached the topic
    assert len(alerts.posts()) == 1
    assert len(alerts.topic.notices()) == 6


def test_same_failure_is_repeated_once_repeat_after_has_passed(alerts: Alerts) -> None:
    notifier = alerts.notifier()
    notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    alerts.clock.advance(timedelta(hours=6))
    notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    assert len(alerts.posts()) == 2
    assert "Still the same failure, first reported 2026-11-22T12:00:00Z" in slack_text(alerts.posts()[1])


def test_a_different_set_of_failing_checks_is_posted_at_once(alerts: Alerts) -> None:
    notifier = alerts.notifier()
    notifier.send(verify_notice("critical"), failing_checks=["row counts"])

    alerts.clock.advance(timedelta(minutes=5))
    notifier.send(verify_notice("critical"), failing_checks=["row counts", "rls policies"])

    assert len(alerts.posts()) == 2
    assert "rls policies, row counts" in slack_text(alerts.posts()[1])


def test_alert_state_is_kept_in_the_catalog_table(alerts: Alerts) -> None:
    config = alerts.config()
    alerts.notifier(config).send(verify_notice("critical"), failing_checks=CHECKS)

    item = alerts.clients.dynamodb.get_item(
        TableName=config.catalog.table, Key={"pk": {"S": "alert#verify#app"}, "sk": {"S": "state"}}
    )["Item"]

    assert [value["S"] for value in item["failing_checks"]["L"]] == CHECKS
    assert item["last_slack_at"]["S"] == "2026-11-22T12:00:00Z"
    assert "expires_at" in item


# Outages -----------------------------------------------------------------------------


def test_slack_answering_500_still_publishes_sns_and_counts_the_failure(
    alerts: Alerts, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given Slack answers every post with 500
    notifier = alerts.notifier()
    alerts.slack.fail_with(500)

    # When a verification fails (and send does not raise)
    delivery = notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # Then the failure is reported, counted, and the topic still has the notice
    assert delivery.slack == "failed"
    assert delivery.failures == ["Slack message not sent: Slack webhook answered HTTP 500: internal_error"]
    assert ("NotificationFailed", "app") in emitted_metrics(capsys.readouterr().out)
    assert [notice["severity"] for notice in alerts.topic.notices()] == ["critical"]


def test_slack_unreachable_still_publishes_sns(alerts: Alerts, capsys: pytest.CaptureFixture[str]) -> None:
    notifier = alerts.notifier(alerts.config(slack_webhook_url=closed_port_url()))

    delivery = notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    assert delivery.slack == "failed"
    assert "Slack webhook unreachable" in delivery.failures[0]
    assert "Connection refused" in delivery.failures[0]
    assert ("NotificationFailed", "app") in emitted_metrics(capsys.readouterr().out)
    assert len(alerts.topic.notices()) == 1


def test_slack_that_never_answers_times_out_and_still_publishes_sns(alerts: Alerts) -> None:
    # Given a webhook that accepts the connection and then says nothing
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        config = alerts.config(slack_webhook_url=f"http://127.0.0.1:{port}/services/T000/B000/silent")

        # When a run fails
        delivery = alerts.notifier(config, slack_timeout=0.5).send(
            verify_notice("critical"), failing_checks=CHECKS
        )

    # Then the send gave up after the timeout and the topic has the notice
    assert delivery.failures == ["Slack message not sent: Slack webhook did not answer within 0.5 s"]
    assert len(alerts.topic.notices()) == 1


def test_a_slack_outage_does_not_suppress_the_next_runs_alert(alerts: Alerts) -> None:
    # Given a failure that could not be posted
    notifier = alerts.notifier()
    alerts.slack.fail_with(500)
    notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # When Slack is back and the next run fails the same way
    alerts.slack.fail_with(200)
    alerts.clock.advance(timedelta(hours=1))
    notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # Then that failure is posted rather than suppressed as already told
    assert alerts.headers() == [":red_circle: Verification failed: app"]


def test_sns_failure_is_recorded_and_slack_still_posted(
    alerts: Alerts, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the alerts topic has been deleted
    notifier = alerts.notifier()
    alerts.clients.sns.delete_topic(TopicArn=alerts.topic.arn)

    # When a run fails
    delivery = notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # Then the SNS failure is reported and counted, and Slack still heard about the run
    assert delivery.sns_message_id is None
    assert delivery.failures[0].startswith(f"SNS publish to {alerts.topic.arn} failed: NotFound")
    assert ("NotificationFailed", "app") in emitted_metrics(capsys.readouterr().out)
    assert len(alerts.posts()) == 1


def test_alert_state_table_unavailable_still_posts_the_alert(alerts: Alerts) -> None:
    # Given the catalog table does not exist, so the alert state can be neither read nor written
    config = build_config(
        topic_arn=alerts.topic.arn,
        table=f"missing-{secrets.token_hex(4)}",
        slack_webhook_url=alerts.slack.url,
    )

    # When a run fails
    delivery = alerts.notifier(config).send(verify_notice("critical"), failing_checks=CHECKS)

    # Then Slack and the topic both got it, and the state problem is reported
    assert len(alerts.posts()) == 1
    assert len(alerts.topic.notices()) == 1
    assert any(
        "alert state" in failure and "ResourceNotFoundException" in failure for failure in delivery.failures
    )


# The webhook secret ------------------------------------------------------------------


def test_webhook_url_read_from_the_secret_gets_the_post(alerts: Alerts) -> None:
    secret_name = f"drsentry/slack-{secrets.token_hex(4)}"
    config = alerts.config(
        secret_values={secret_name: {"url": alerts.slack.url}}, slack_webhook_secret=secret_name
    )

    alerts.notifier(config).send(verify_notice("critical"), failing_checks=CHECKS)

    assert alerts.headers() == [":red_circle: Verification failed: app"]


def test_unreadable_webhook_secret_is_named_and_sns_still_published(
    alerts: Alerts, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the configured webhook secret does not exist
    secret_name = f"drsentry/slack-missing-{secrets.token_hex(4)}"
    notifier = alerts.notifier(alerts.config(slack_webhook_secret=secret_name))

    # When a run fails
    delivery = notifier.send(verify_notice("critical"), failing_checks=CHECKS)

    # Then the error names the secret (in the delivery and in the log), and SNS has the notice
    assert delivery.failures == [
        f"Slack message not sent: cannot read secret {secret_name!r}: ResourceNotFoundException"
    ]
    assert secret_name in caplog.text
    assert len(alerts.topic.notices()) == 1


def test_webhook_url_never_appears_in_logs_or_output(
    alerts: Alerts, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given everything logged at DEBUG, and webhooks that work, fail, and are unreachable
    caplog.set_level(logging.DEBUG)
    refused_url = closed_port_url()
    working = alerts.notifier()
    refused = alerts.notifier(alerts.config(slack_webhook_url=refused_url))

    # When runs fail, recover, and hit Slack outages
    working.send(verify_notice("critical"), failing_checks=CHECKS)
    working.send(verify_notice("info"))
    alerts.slack.fail_with(500)
    working.send(verify_notice("warning"), failing_checks=["recent rows"])
    refused.send(verify_notice("critical"), failing_checks=CHECKS)

    # Then the failures were logged, without the secret part of either URL anywhere
    formatted = [drsentry_logger.registered_formatter.format(record) for record in caplog.records]
    captured = capsys.readouterr()
    everything = "\n".join([caplog.text, *formatted, captured.out, captured.err])
    assert "Slack webhook answered HTTP 500" in everything
    assert "Slack webhook unreachable" in everything
    for url in (alerts.slack.url, refused_url):
        assert url.split("/services/", 1)[1] not in everything


# CloudWatch alarms on the same topic (the notify function) ------------------------------


def alarm(state: str) -> dict[str, Any]:
    """A CloudWatch alarm state-change message, as CloudWatch publishes it to SNS."""
    return {
        "AlarmName": "drsentry-app-backup-age",
        "AlarmDescription": "Newest backup of target app is older than the RPO",
        "NewStateValue": state,
        "OldStateValue": "OK" if state == "ALARM" else "ALARM",
        "NewStateReason": "Threshold Crossed: 1 datapoint [7300.0] was greater than the threshold (3600.0).",
        "StateChangeTime": "2026-11-22T12:00:00.000+0000",
        "Region": "US East (N. Virginia)",
        "Trigger": {
            "MetricName": "BackupAgeSeconds",
            "Namespace": "drsentry",
            "Dimensions": [{"value": "app", "name": "Target"}],
            "Threshold": 3600.0,
        },
    }


def test_cloudwatch_alarm_on_the_topic_is_posted_to_slack_for_people(alerts: Alerts) -> None:
    # Given CloudWatch published an alarm state change to the alerts topic
    config = alerts.config()
    alerts.clients.sns.publish(TopicArn=alerts.topic.arn, Message=json.dumps(alarm("ALARM")), Subject="ALARM")
    [envelope] = alerts.topic.messages()

    # When the notify function handles the message it receives
    outcome = handle_topic_message(config, alerts.clients, envelope["Message"])

    # Then Slack shows a red alarm naming the alarm, the target, the reason and what to run
    assert outcome == "alarm-posted"
    assert alerts.headers() == [":red_circle: ALARM: drsentry-app-backup-age"]
    post = slack_text(alerts.posts()[0])
    assert "`app`" in post
    assert "older than the RPO" in post
    assert "drsentry backups list --target app" in post


def test_cloudwatch_alarm_back_to_ok_is_posted_as_resolved(alerts: Alerts) -> None:
    handle_topic_message(alerts.config(), alerts.clients, json.dumps(alarm("OK")))

    assert alerts.headers() == [":white_check_mark: Resolved: drsentry-app-backup-age"]


def test_run_notices_on_the_topic_are_not_posted_twice(alerts: Alerts) -> None:
    # Given a failed run posted to Slack and published to the topic
    config = alerts.config()
    alerts.notifier(config).send(verify_notice("critical"), failing_checks=CHECKS)

    # When the notify function receives that run's message from the topic
    [envelope] = alerts.topic.messages()
    outcome = handle_topic_message(config, alerts.clients, envelope["Message"])

    # Then Slack still has only the run's own post
    assert outcome == "run-notice-skipped"
    assert len(alerts.posts()) == 1


def test_alarm_not_posted_when_slack_is_down_is_counted(
    alerts: Alerts, capsys: pytest.CaptureFixture[str]
) -> None:
    config = alerts.config()
    alerts.slack.fail_with(500)

    outcome = handle_topic_message(config, alerts.clients, json.dumps(alarm("ALARM")))

    assert outcome == "alarm-not-posted"
    assert ("NotificationFailed", "app") in emitted_metrics(capsys.readouterr().out)


@dataclass
class LambdaContextStub:
    function_name: str = "drsentry-notify"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:123456789012:function:drsentry-notify"
    aws_request_id: str = "c6af9ac6-7b61-11e6-9a41-93e812345678"


def load_notify_handler() -> Any:
    spec = importlib.util.spec_from_file_location("notify_app", REPO / "functions" / "notify" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def sns_event(topic_arn: str, message: str) -> dict[str, Any]:
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic_arn}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                    "TopicArn": topic_arn,
                    "Subject": "ALARM",
                    "Message": message,
                    "Timestamp": "2026-11-22T12:00:00.000Z",
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem",
                    "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
                    "MessageAttributes": {},
                },
            }
        ]
    }


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_notify_function_posts_an_alarm_from_its_sns_event(
    alerts: Alerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the deployed shape: the config in an SSM parameter, the function subscribed to the topic
    parameter = f"/drsentry/config-{secrets.token_hex(4)}"
    alerts.clients.ssm.put_parameter(Name=parameter, Value=dump_config(alerts.config()), Type="String")
    monkeypatch.setenv("DRSENTRY_CONFIG_PARAM", parameter)
    lambda_handler = load_notify_handler()

    # When SNS invokes it with an alarm and with a run notice
    topic_arn = alerts.topic.arn
    alarm_outcomes = lambda_handler(sns_event(topic_arn, json.dumps(alarm("ALARM"))), LambdaContextStub())
    notice_outcomes = lambda_handler(
        sns_event(topic_arn, verify_notice().model_dump_json()), LambdaContextStub()
    )

    # Then only the alarm reached Slack
    assert (alarm_outcomes, notice_outcomes) == (["alarm-posted"], ["run-notice-skipped"])
    assert alerts.headers() == [":red_circle: ALARM: drsentry-app-backup-age"]


def _get_secret_value(request: Request) -> bool:
    return request.amz_target == "secretsmanager.GetSecretValue"


@pytest.mark.filterwarnings("ignore:No application metrics to publish:UserWarning")
def test_warm_notify_invocations_read_the_webhook_secret_once(
    alerts: Alerts, aws_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the webhook URL in a secret, the config in SSM, and every AWS request passing a proxy
    secret_name = f"drsentry/slack-{secrets.token_hex(4)}"
    config = alerts.config(
        secret_values={secret_name: {"url": alerts.slack.url}}, slack_webhook_secret=secret_name
    )
    parameter = f"/drsentry/config-{secrets.token_hex(4)}"
    alerts.clients.ssm.put_parameter(Name=parameter, Value=dump_config(config), Type="String")
    monkeypatch.setenv("DRSENTRY_CONFIG_PARAM", parameter)
    with FaultProxy(aws_endpoint) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        secret_reads = proxy.add(Rule(_get_secret_value, "delay"))  # counts; delays by 0 s
        lambda_handler = load_notify_handler()

        # When one container receives three alarms, one invocation after the other
        outcomes = [
            lambda_handler(sns_event(alerts.topic.arn, json.dumps(alarm("ALARM"))), LambdaContextStub())
            for _ in range(3)
        ]

        # Then all three reached Slack, and Secrets Manager was asked for the webhook once
        assert outcomes == [["alarm-posted"]] * 3
        assert len(alerts.posts()) == 3
        assert secret_reads.applied == 1

        # And once the config changes (read again after its cache expired), the services are
        # built anew from it: a new secrets cache reads the secret again
        changed = dump_config(config) + "# rotated webhook\n"
        alerts.clients.ssm.put_parameter(Name=parameter, Value=changed, Type="String", Overwrite=True)
        parameters.clear_caches()
        lambda_handler(sns_event(alerts.topic.arn, json.dumps(alarm("OK"))), LambdaContextStub())
        assert secret_reads.applied == 2
