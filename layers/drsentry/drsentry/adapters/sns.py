"""The alerts topic: publishing run notices and checking the topic is there.

The notifier publishes every run's notice here, and `drsentry check` asks whether the
topic exists; an SNS error becomes NotificationError with one line naming the topic.
botocore's standard retries (AwsClients) already cover throttling and blips.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from drsentry.adapters.aws_errors import AWS_ERRORS, describe, is_not_found
from drsentry.core.errors import NotificationError

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient


class Topic:
    """One SNS topic, by ARN."""

    def __init__(self, sns: SNSClient, arn: str) -> None:
        self.sns = sns
        self.arn = arn

    def publish(self, message: str, *, subject: str, attributes: Mapping[str, str]) -> str:
        """Publish one message with string attributes (for subscription filter policies); its id."""
        try:
            response = self.sns.publish(
                TopicArn=self.arn,
                Subject=subject,
                Message=message,
                MessageAttributes={
                    name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
                },
            )
        except AWS_ERRORS as exc:
            raise NotificationError(f"SNS publish to {self.arn} failed: {describe(exc)}") from exc
        return response["MessageId"]

    def exists(self) -> bool:
        try:
            self.sns.get_topic_attributes(TopicArn=self.arn)
        except AWS_ERRORS as exc:
            if is_not_found(exc):
                return False
            raise NotificationError(
                f"SNS topic {self.arn}: reading its attributes failed: {describe(exc)}"
            ) from exc
        return True
