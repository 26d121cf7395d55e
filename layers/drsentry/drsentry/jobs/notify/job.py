"""Notifications: how a run's outcome, and every CloudWatch alarm, reaches people.

The route
---------
1. Every run (backup, verify, archive, replication-check) writes its record first, then
   calls ``Notifier.send(notice)`` once. ``send`` never raises: the record is already
   written, and a notification problem must not turn a good backup into a failed run.
2. SNS first: one message on ``notifications.sns_topic_arn`` per run, the notice as JSON
   (CONTRACT.md "Notifications"), with message attributes ``severity``, ``source`` and
   ``target`` for subscription filter policies. botocore's standard retries (AwsClients)
   cover throttling and blips; a publish that still fails is logged, counted in the
   ``NotificationFailed`` metric and returned in the ``Delivery``.
3. Slack second, from the run itself, with slack_sdk's webhook client: a Block Kit
   message for failures and warnings, and a "recovered" message for the first success
   after them (per source and target). The webhook URL comes from ``slack_webhook_url``
   or the Secrets Manager secret ``slack_webhook_secret``. A Slack outage (refused,
   non-200, timeout) or an unreadable secret is logged and counted, never raised.
4. No spam: the catalog table holds one alert state per source and target
   (``Catalog.alert_states``) recording what Slack was last told.
   The same failure (same severity, status and set of failing checks) is repeated at most
   every ``notifications.repeat_after``; a different failure is posted at once. The state
   is written only after Slack took the message, so a Slack outage never suppresses the
   next run's alert or loses a recovery message. A DynamoDB error is logged and counted
   and Slack is still tried (a duplicate post beats a lost one).
5. CloudWatch alarms publish to the same topic. The ``notify`` function is subscribed to
   it and calls ``handle_topic_message`` for each message: alarm state changes (ALARM,
   OK, INSUFFICIENT_DATA) are formatted for Slack and posted; drsentry's own run notices
   (JSON with ``source`` and ``run_id``) are skipped because the run already posted them,
   so nothing reaches Slack twice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from drsentry.adapters.secrets import Credentials
from drsentry.adapters.slack import (
    SLACK_TIMEOUT_SECONDS,
    SlackDeliveryError,
    SlackWebhook,
    alarm_target,
    format_alarm,
    format_notice,
    notice_kind,
    webhook_url,
)
from drsentry.adapters.sns import Topic
from drsentry.core import observability as obs
from drsentry.core.errors import CatalogError, CredentialsError, NotificationError
from drsentry.core.records import Severity, iso, parse_iso, utc_now

if TYPE_CHECKING:
    from drsentry.adapters.aws import AwsClients
    from drsentry.adapters.table.alert_states import AlertStates
    from drsentry.core.config import Config
    from drsentry.core.records import RunNotice

__all__ = [
    "AlertState",
    "Decision",
    "Delivery",
    "Notifier",
    "decide",
    "format_alarm",
    "handle_topic_message",
]

_SUBJECT_LIMIT = 99  # SNS: ASCII, no line breaks, under 100 characters

Decision = Literal["alert", "remind", "suppress", "recover", "quiet"]
SlackOutcome = Literal["posted", "suppressed", "nothing-to-say", "not-configured", "failed"]
TopicOutcome = Literal["alarm-posted", "alarm-not-posted", "run-notice-skipped", "unrecognised"]


# Alert state and the decision what Slack hears -------------------------------------------


class AlertState(BaseModel):
    """What Slack was last told about one source and target."""

    severity: Severity
    status: str
    failing_checks: list[str]
    since: str  # when Slack was first told about this failure (or the recovery)
    last_slack_at: str

    def is_problem(self) -> bool:
        return self.severity != "info"


def failing_check_set(names: Iterable[Any] | None) -> list[str]:
    """Sorted, de-duplicated check names: the order checks ran in must not make a new failure."""
    return sorted({str(name) for name in names or [] if str(name)})


def decide(
    previous: AlertState | None,
    *,
    severity: Severity,
    status: str,
    failing_checks: list[str],
    now: datetime,
    repeat_after: timedelta,
) -> Decision:
    """Whether this run's outcome goes to Slack, and as what. Pure: no clock, no I/O.

    - a failure or warning not told before (or different from the last one): ``alert``;
    - the same one again: ``remind`` once ``repeat_after`` has passed, else ``suppress``;
    - the first success after a failure or warning: ``recover``; other successes: ``quiet``.
    """
    if severity == "info":
        return "recover" if previous is not None and previous.is_problem() else "quiet"
    if previous is None or not previous.is_problem():
        return "alert"
    same_failure = (previous.severity, previous.status, previous.failing_checks) == (
        severity,
        status,
        failing_check_set(failing_checks),
    )
    if not same_failure:
        return "alert"
    if now - parse_iso(previous.last_slack_at) >= repeat_after:
        return "remind"
    return "suppress"


def next_state(
    previous: AlertState | None,
    decision: Decision,
    *,
    severity: Severity,
    status: str,
    failing_checks: list[str],
    now: datetime,
) -> AlertState | None:
    """The state to store after Slack took the message; None when nothing changes."""
    if decision in {"suppress", "quiet"}:
        return None
    since = previous.since if decision == "remind" and previous is not None else iso(now)
    return AlertState(
        severity=severity,
        status=status,
        failing_checks=failing_check_set(failing_checks) if decision != "recover" else [],
        since=since,
        last_slack_at=iso(now),
    )


class Delivery(BaseModel):
    """What happened to one notice: callers may report it (the notice itself is never lost)."""

    sns_message_id: str | None = None
    slack: SlackOutcome = "not-configured"
    failures: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.failures


# The notifier --------------------------------------------------------------------------


def _ascii_line(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]+", " ", text).strip()


def sns_subject(notice: RunNotice) -> str:
    return _ascii_line(f"drsentry {notice.severity}: {notice.source} {notice.target} {notice.status}")[
        :_SUBJECT_LIMIT
    ]


class Notifier:
    """The notification port every run calls once, after its record is written."""

    def __init__(
        self,
        config: Config,
        clients: AwsClients,
        *,
        alert_states: AlertStates,
        credentials: Credentials | None = None,
        slack_timeout: float = SLACK_TIMEOUT_SECONDS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.notifications = config.notifications
        self.clients = clients
        self.alert_states = alert_states
        # Share one Credentials across runs in a process: its secret cache lives in it.
        self.credentials = credentials or Credentials(clients)
        self.slack_timeout = slack_timeout
        self.clock = clock

    def send(self, notice: RunNotice, *, failing_checks: list[str] | None = None) -> Delivery:
        """Publish to SNS, then tell Slack if it needs telling. Never raises.

        ``failing_checks`` defaults to ``notice.details["failing_checks"]`` when present.
        """
        if failing_checks is None:
            from_details = notice.details.get("failing_checks")
            failing_checks = from_details if isinstance(from_details, list) else []
        checks = failing_check_set(failing_checks)
        delivery = Delivery()
        delivery.sns_message_id = self._publish(notice, delivery)
        delivery.slack = self._tell_slack(notice, checks, delivery)
        return delivery

    # SNS -------------------------------------------------------------------------------

    def _publish(self, notice: RunNotice, delivery: Delivery) -> str | None:
        topic_arn = self.notifications.sns_topic_arn
        if not topic_arn:
            obs.logger.info(
                "no SNS topic configured; run notice not published", extra={"target": notice.target}
            )
            return None
        try:
            return Topic(self.clients.sns, topic_arn).publish(
                notice.model_dump_json(),
                subject=sns_subject(notice),
                attributes={"severity": notice.severity, "source": notice.source, "target": notice.target},
            )
        except NotificationError as exc:
            self._failed(notice, "sns", str(exc), delivery)
            return None

    # Slack -----------------------------------------------------------------------------

    def _tell_slack(self, notice: RunNotice, checks: list[str], delivery: Delivery) -> SlackOutcome:
        if not (self.notifications.slack_webhook_url or self.notifications.slack_webhook_secret):
            return "not-configured"
        now = self.clock()
        previous = self._load_state(notice, delivery)
        decision = decide(
            previous,
            severity=notice.severity,
            status=notice.status,
            failing_checks=checks,
            now=now,
            repeat_after=self.notifications.repeat_after,
        )
        if decision == "quiet":
            return "nothing-to-say"
        if decision == "suppress":
            obs.logger.info(
                "same failure already reported to Slack; not repeating yet",
                extra={"target": notice.target, "source": notice.source, "failing_checks": checks},
            )
            return "suppressed"
        payload = format_notice(
            notice,
            kind=notice_kind(notice, recovered=decision == "recover"),
            failing_checks=checks,
            repeat_since=previous.since if decision == "remind" and previous else None,
            repeat_after=self.notifications.repeat_after,
        )
        try:
            url = webhook_url(self.notifications, self.credentials)
            if url is None:  # not reached: a Slack source is configured (checked above)
                return "not-configured"
            SlackWebhook(url, timeout=self.slack_timeout).post(payload)
        except (CredentialsError, SlackDeliveryError) as exc:
            self._failed(notice, "slack", f"Slack message not sent: {exc}", delivery)
            return "failed"
        state = next_state(
            previous, decision, severity=notice.severity, status=notice.status, failing_checks=checks, now=now
        )
        if state is not None:
            self._save_state(notice, state, now, delivery)
        return "posted"

    def _load_state(self, notice: RunNotice, delivery: Delivery) -> AlertState | None:
        try:
            fields = self.alert_states.load(notice.source, notice.target)
        except CatalogError as exc:
            # Without the state the run cannot know what Slack heard: it alerts rather than stays silent.
            self._failed(notice, "alert-state", str(exc), delivery)
            return None
        if fields is None:
            return None
        try:
            return AlertState.model_validate(fields)
        except ValidationError:
            obs.logger.warning(
                "alert state item is malformed; treating as none",
                extra={"target": notice.target, "source": notice.source},
            )
            return None

    def _save_state(self, notice: RunNotice, state: AlertState, now: datetime, delivery: Delivery) -> None:
        try:
            self.alert_states.save(
                notice.source, notice.target, state.model_dump(), run_id=notice.run_id, saved_at=now
            )
        except CatalogError as exc:
            self._failed(notice, "alert-state", str(exc), delivery)

    def _failed(self, notice: RunNotice, channel: str, reason: str, delivery: Delivery) -> None:
        delivery.failures.append(reason)
        obs.logger.error(
            reason,
            extra={
                "channel": channel,
                "target": notice.target,
                "source": notice.source,
                "run_id": notice.run_id,
            },
        )
        obs.put_metric(obs.NOTIFICATION_FAILED, "Count", 1, notice.target)


# Messages arriving on the topic (the notify function) -----------------------------------

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
