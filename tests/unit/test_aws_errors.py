"""What an AWS error means, said once: the predicates, the one-line wording, and the CLI's
exit codes for an AWS error no adapter turned into a domain error."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
import typer
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber
from moto import mock_aws
from typer.testing import CliRunner, Result

from drsentry.adapters import aws_errors
from drsentry.adapters.aws import AwsClients
from drsentry.adapters.sns import Topic
from drsentry.core.errors import NotificationError
from drsentry.operator.cli.app import cli_errors


def client_error(code: str, message: str = "", operation: str = "GetObject") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@pytest.mark.parametrize(
    ("code", "not_found", "no_such_bucket", "archived", "refused"),
    [
        ("404", True, False, False, False),  # a HEAD has no body to name what is missing
        ("NoSuchKey", True, False, False, False),
        ("NoSuchBucket", True, True, False, False),
        ("ObjectLockConfigurationNotFoundError", True, False, False, False),
        ("InvalidObjectState", False, False, True, False),
        ("AccessDenied", False, False, False, True),
        ("SlowDown", False, False, False, False),
    ],
)
def test_what_an_s3_error_code_means(
    code: str, not_found: bool, no_such_bucket: bool, archived: bool, refused: bool
) -> None:
    error = client_error(code)
    assert aws_errors.is_not_found(error) is not_found
    assert aws_errors.is_no_such_bucket(error) is no_such_bucket
    assert aws_errors.is_archived(error) is archived
    assert aws_errors.is_delete_refused(error) is refused
    assert aws_errors.is_throttled(error) is (code == "SlowDown")


def test_describe_is_one_line_with_the_code() -> None:
    assert aws_errors.describe(client_error("AccessDenied", "Access Denied\nRequestId: 1")) == (
        "AccessDenied: Access Denied"
    )
    assert aws_errors.describe(client_error("404")) == "404"
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
    assert aws_errors.describe(unreachable) == 'Could not connect to the endpoint URL: "http://127.0.0.1:1"'
    assert aws_errors.is_unreachable(unreachable) and not aws_errors.is_not_found(unreachable)
    assert aws_errors.describe(OSError("\n  disk full\nmore")) == "disk full"
    assert aws_errors.operation(client_error("x", operation="PutObject")) == "PutObject"
    assert aws_errors.operation(unreachable) == "request"


# the command line ------------------------------------------------------------------------


def invoke(error: BaseException) -> Result:
    app = typer.Typer()

    @app.command()
    @cli_errors
    def command() -> None:
        raise error

    return CliRunner().invoke(app, [])


def test_no_credentials_is_bad_usage_with_the_way_out() -> None:
    result = invoke(NoCredentialsError())

    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == 'error: no AWS credentials found (for the local stack: eval "$(drsentry local env)")'
    )


def test_an_aws_refusal_is_one_line_and_exit_1() -> None:
    result = invoke(client_error("AccessDenied", "Access Denied\nmore detail", operation="PutObject"))

    assert result.exit_code == 1
    assert result.stderr.strip() == "error: AWS PutObject failed: AccessDenied: Access Denied"
    assert "Traceback" not in result.output


def test_no_answer_from_aws_is_one_line_and_exit_1() -> None:
    result = invoke(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))

    assert result.exit_code == 1
    assert result.stderr.strip() == (
        'error: AWS request failed: Could not connect to the endpoint URL: "http://127.0.0.1:1"'
    )


# the alerts topic ---------------------------------------------------------------------------


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsClients]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield AwsClients("us-east-1")


def test_a_topic_publishes_with_filterable_attributes(clients: AwsClients) -> None:
    # Given a topic with an SQS subscriber
    arn = clients.sns.create_topic(Name="alerts")["TopicArn"]
    sqs = clients.client("sqs")
    queue = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    clients.sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)

    # When a notice is published
    message_id = Topic(clients.sns, arn).publish(
        '{"status": "failed"}', subject="s", attributes={"target": "app"}
    )

    # Then the subscriber has it, with its attribute
    [received] = sqs.receive_message(QueueUrl=queue)["Messages"]
    assert message_id in received["Body"] and '"target"' in received["Body"]
    assert Topic(clients.sns, arn).exists() is True


def test_a_missing_topic_does_not_exist_and_refuses_publishing(clients: AwsClients) -> None:
    arn = "arn:aws:sns:us-east-1:123456789012:nobody-made-this-topic"
    topic = Topic(clients.sns, arn)

    assert topic.exists() is False
    with pytest.raises(NotificationError, match=f"^SNS publish to {arn} failed: NotFound"):
        topic.publish("{}", subject="s", attributes={})


def test_a_topic_that_cannot_be_read_is_an_error_not_a_missing_topic() -> None:
    sns = boto3.session.Session().client(
        "sns", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    stubber = Stubber(sns)
    stubber.add_client_error(
        "get_topic_attributes", service_error_code="AuthorizationError", http_status_code=403
    )
    arn = "arn:aws:sns:us-east-1:123456789012:alerts"

    with stubber, pytest.raises(NotificationError) as refused:
        Topic(sns, arn).exists()

    assert str(refused.value).startswith(
        f"SNS topic {arn}: reading its attributes failed: AuthorizationError"
    )
