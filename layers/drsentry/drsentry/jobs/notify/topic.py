"""The notify function's job: each message on the alerts topic, alarm state changes posted to
Slack, run notices skipped (step 5 of the route in the package docstring).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from drsentry.adapters.secrets import Credentials
from drsentry.adapters.slack import SlackDeliveryError, SlackWebhook, alarm_target, format_alarm, webhook_url
from drsentry.core import observability as obs
from drsentry.core.errors import CredentialsError

if TYPE_CHECKING:
    from drsentry.adapters.aws import AwsClients
    from drsentry.core.config import Config

TopicOutcome = Literal["alarm-posted", "alarm-not-posted", "run-notice-skipped", "unrecognised"]

NO_TARGET = "none"  # Target dimension value for alarms whose metric has no Target


def is_run_notice(message: dict[str, Any]) -> bool:
    return "source" in message and "run_id" in message


def is_alarm(message: dict[str, Any]) -> bool:
    return "AlarmName" in message and "NewStateValue" in message


def handle_topic_message(
    config: Config, clients: AwsClients, message_text: str, *, credentials: Credentials | None = None
) -> TopicOutcome:
    """One SNS message from the alerts topic: post alarm state changes to Slack.

    Run notices are skipped (the run posted them itself). A Slack outage is logged and
    counted, not raised: a retried invocation would not make Slack come back sooner,
    and the alarm itself stays visible in CloudWatch.
    """
    try:
        message = json.loads(message_text)
    except json.JSONDecodeError:
        message = None
    if not isinstance(message, dict):
        obs.logger.warning(
            "message on the alerts topic is not JSON; ignored", extra={"length": len(message_text)}
        )
        return "unrecognised"
    if is_run_notice(message):
        return "run-notice-skipped"
    if not is_alarm(message):
        obs.logger.warning("message on the alerts topic is neither an alarm nor a run notice; ignored")
        return "unrecognised"

    payload = format_alarm(message)
    target = alarm_target(message) or NO_TARGET
    log_fields = {
        "channel": "slack",
        "alarm": str(message["AlarmName"]),
        "state": str(message["NewStateValue"]),
        "target": target,
    }
    try:
        url = webhook_url(config.notifications, credentials or Credentials(clients))
        if url is None:
            obs.logger.info("Slack is not configured; alarm not posted", extra=log_fields)
            return "alarm-not-posted"
        SlackWebhook(url).post(payload)
    except (CredentialsError, SlackDeliveryError) as exc:
        obs.logger.error(f"Slack message for alarm not sent: {exc}", extra=log_fields)
        obs.put_metric(obs.NOTIFICATION_FAILED, "Count", 1, target)
        return "alarm-not-posted"
    obs.logger.info("alarm posted to Slack", extra=log_fields)
    return "alarm-posted"
