"""The notification port every run calls once, after its record is written: SNS, then Slack
(steps 1 to 4 of the route in the package docstring).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ValidationError

from drsentry.adapters.secrets import Credentials
from drsentry.adapters.slack import (
    SLACK_TIMEOUT_SECONDS,
    SlackDeliveryError,
    SlackWebhook,
    format_notice,
    notice_kind,
    webhook_url,
)
from drsentry.adapters.sns import Topic
from drsentry.core import observability as obs
from drsentry.core.errors import CatalogError, CredentialsError, NotificationError
from drsentry.core.records import utc_now
from drsentry.jobs.notify.rules import AlertState, decide, failing_check_set, next_state, sns_subject

if TYPE_CHECKING:
    from drsentry.adapters.aws import AwsClients
    from drsentry.adapters.table.alert_states import AlertStates
    from drsentry.core.config import Config
    from drsentry.core.records import RunNotice

SlackOutcome = Literal["posted", "suppressed", "nothing-to-say", "not-configured", "failed"]


class Delivery(BaseModel):
    """What happened to one notice: callers may report it (the notice itself is never lost)."""

    sns_message_id: str | None = None
    slack: SlackOutcome = "not-configured"
    failures: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.failures


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
