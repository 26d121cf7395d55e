"""Slack: Block Kit messages for run notices and CloudWatch alarms, and the webhook port.

Formatting is pure (dict in, dict out) so it is tested without a network. Posting goes
through ``slack_sdk``'s ``WebhookClient`` with a short timeout: a run must never wait
long on Slack. The webhook URL is a secret (anyone holding it can post to the channel),
so it is never logged, never put into an exception message, and slack_sdk gets a logger
of its own that discards its records (it would otherwise log the URL on retries).
"""

from __future__ import annotations

import http.client
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from drsentry.core import observability as obs
from drsentry.core.config import format_duration
from drsentry.core.errors import CredentialsError, DrsentryError

if TYPE_CHECKING:
    from drsentry.adapters.secrets import Credentials
    from drsentry.core.config import NotificationsConfig
    from drsentry.core.records import RunNotice

SLACK_TIMEOUT_SECONDS = 5.0
# Slack's limits: header text 150 chars, section text 3000, a field 2000, at most 10 fields.
_HEADER_LIMIT = 150
_TEXT_LIMIT = 3000
_FIELD_LIMIT = 2000
_ERROR_LIMIT = 1000

NoticeKind = Literal["failure", "warning", "recovered"]

_EMOJI = {
    "failure": ":red_circle:",
    "warning": ":warning:",
    "recovered": ":white_check_mark:",
}
_LABEL = {"failure": "failed", "warning": "warning", "recovered": "recovered"}
_SOURCE_TITLE = {
    "backup": "Backup",
    "verify": "Verification",
    "archive": "Archive",
    "replication-check": "Replication check",
}

# A webhook-only logger outside the logging tree: slack_sdk logs the request URL (the
# secret) at INFO when it retries, and nothing it says is worth more than our own lines.
_SLACK_SDK_LOGGER = logging.Logger("drsentry.slack_sdk", level=logging.CRITICAL + 1)
_SLACK_SDK_LOGGER.addHandler(logging.NullHandler())


class SlackDeliveryError(DrsentryError):
    """Slack did not take a message (refused, unreachable, timed out, answered non-200)."""


# Formatting --------------------------------------------------------------------------


def escape(text: str) -> str:
    """Slack mrkdwn treats &, < and > as control characters; user text must not."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def human_duration(seconds: float) -> str:
    """42 s, 12.5 min, 3.2 h, 4.1 d: what a person reads at a glance."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size * (2 if unit == "d" else 1):
            value = f"{seconds / size:.1f}".removesuffix(".0")
            return f"{value} {unit}"
    return f"{seconds:.0f} s"  # unreachable: 60 s and more is at least 1 min


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _against(measured: float | None, limit: float | None, limit_name: str) -> str | None:
    """'2.5 h (RPO 1 h, over)': a measurement against its objective."""
    if measured is None:
        return None
    text = human_duration(measured)
    if limit is None:
        return text
    verdict = "*over*" if measured > limit else "within"
    return f"{text} ({limit_name} {human_duration(limit)}, {verdict})"


def inspect_command(source: str, target: str) -> str:
    """The drsentry command that shows the operator what this notice is about."""
    if source == "verify":
        return f"drsentry verifications list --target {target}"
    if source in {"backup", "archive"}:
        return f"drsentry backups list --target {target}"
    return "drsentry status"


def notice_kind(notice: RunNotice, *, recovered: bool = False) -> NoticeKind:
    if recovered:
        return "recovered"
    return "failure" if notice.severity == "critical" else "warning"


def _field(title: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": _clip(f"*{title}*\n{value}", _FIELD_LIMIT)}


def _header(title: str) -> dict[str, Any]:
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": _clip(title, _HEADER_LIMIT), "emoji": True},
    }


def _section(mrkdwn: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _clip(mrkdwn, _TEXT_LIMIT)}}


def _hours_to_seconds(value: Any) -> float | None:
    hours = _number(value)
    return hours * 3600 if hours is not None else None


def _context(*lines: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": _clip(line, _TEXT_LIMIT)} for line in lines],
    }


def format_notice(
    notice: RunNotice,
    *,
    kind: NoticeKind,
    failing_checks: list[str],
    repeat_since: str | None = None,
    repeat_after: timedelta | None = None,
) -> dict[str, Any]:
    """The Slack payload (``text`` fallback + Block Kit ``blocks``) for one run notice.

    ``repeat_since`` marks a reminder of a failure Slack was already told about.
    """
    source_title = _SOURCE_TITLE.get(notice.source, notice.source)
    title = f"{_EMOJI[kind]} {source_title} {_LABEL[kind]}: {notice.target}"
    details = notice.details
    checks_text = ", ".join(escape(name) for name in failing_checks) if failing_checks else "none"

    fields = [
        _field("Target", f"`{escape(notice.target)}`"),
        _field("Status", escape(notice.status)),
    ]
    if kind != "recovered" or failing_checks:
        fields.append(_field("Failing checks", checks_text))
    if details.get("backup_id"):
        fields.append(_field("Backup", f"`{escape(str(details['backup_id']))}`"))
    age = _hours_to_seconds(details.get("backup_age_hours"))
    backup_age = _against(age, _hours_to_seconds(details.get("rpo_hours")), "RPO")
    if backup_age:
        fields.append(_field("Backup age", backup_age))
    restore = _against(_number(details.get("restore_seconds")), _number(details.get("rto_seconds")), "RTO")
    if restore:
        fields.append(_field("Restore time", restore))

    blocks: list[dict[str, Any]] = [
        _header(title),
        _section(escape(notice.summary)),
        {"type": "section", "fields": fields[:10]},
    ]
    error = details.get("error")
    if error and kind != "recovered":
        blocks.append(_section(f"```{_clip(escape(str(error)), _ERROR_LIMIT)}```"))
    context_lines = [
        f"Inspect: `{inspect_command(notice.source, notice.target)}`",
        f"run `{escape(notice.run_id)}`",
    ]
    if repeat_since:
        every = f"; reminded every {format_duration(repeat_after)}" if repeat_after else ""
        context_lines.insert(0, f"Still the same failure, first reported {escape(repeat_since)}{every}")
    blocks.append(_context(*context_lines))

    fallback = f"{title}: {notice.summary}"
    if failing_checks and kind != "recovered":
        fallback += f" (failing checks: {', '.join(failing_checks)})"
    return {"text": _clip(escape(fallback), _TEXT_LIMIT), "blocks": blocks}


_ALARM_STATE = {
    "ALARM": (":red_circle:", "ALARM"),
    "OK": (":white_check_mark:", "Resolved"),
    "INSUFFICIENT_DATA": (":grey_question:", "Insufficient data"),
}


def alarm_target(message: dict[str, Any]) -> str | None:
    """The value of the alarm metric's ``Target`` dimension, if it has one."""
    trigger = message.get("Trigger") or {}
    for dimension in trigger.get("Dimensions") or []:
        # CloudWatch writes these keys in lower case in alarm notifications; accept both.
        name = dimension.get("name", dimension.get("Name"))
        if name == obs.TARGET_DIMENSION:
            value = dimension.get("value", dimension.get("Value"))
            return str(value) if value is not None else None
    return None


def _alarm_command(metric_name: str | None, target: str | None) -> str:
    by_source = {
        obs.BACKUP_SUCCESS: "backup",
        obs.BACKUP_FAILURE: "backup",
        obs.BACKUP_AGE_SECONDS: "backup",
        obs.BACKUP_DURATION_SECONDS: "backup",
        obs.VERIFIED_BACKUP_AGE_SECONDS: "verify",
        obs.VERIFICATION_FAILURE: "verify",
        obs.VERIFICATION_WARNING: "verify",
        obs.RESTORE_SECONDS: "verify",
        obs.ARCHIVE_FAILURE: "archive",
    }
    source = by_source.get(metric_name or "")
    if source and target:
        return inspect_command(source, target)
    return "drsentry status"


def format_alarm(message: dict[str, Any]) -> dict[str, Any]:
    """The Slack payload for a CloudWatch alarm state-change message (ALARM, OK, INSUFFICIENT_DATA)."""
    state = str(message.get("NewStateValue") or "UNKNOWN")
    emoji, label = _ALARM_STATE.get(state, (":grey_question:", state))
    alarm_name = str(message.get("AlarmName") or "unnamed alarm")
    trigger = message.get("Trigger") or {}
    metric_name = trigger.get("MetricName")
    target = alarm_target(message)
    title = f"{emoji} {label}: {alarm_name}"

    fields = [_field("State", f"{escape(str(message.get('OldStateValue') or '?'))} → {escape(state)}")]
    if target:
        fields.append(_field("Target", f"`{escape(target)}`"))
    if metric_name:
        namespace = trigger.get("Namespace")
        metric = f"{namespace}/{metric_name}" if namespace else str(metric_name)
        fields.append(_field("Metric", f"`{escape(metric)}`"))
    if message.get("StateChangeTime"):
        fields.append(_field("Since", escape(str(message["StateChangeTime"]))))
    if message.get("Region"):
        fields.append(_field("Region", escape(str(message["Region"]))))

    reason = str(message.get("NewStateReason") or "")
    description = str(message.get("AlarmDescription") or "")
    body = "\n".join(escape(part) for part in (description, reason) if part) or "(no reason given)"
    blocks: list[dict[str, Any]] = [
        _header(title),
        _section(body),
        {"type": "section", "fields": fields},
        _context(f"Inspect: `{_alarm_command(metric_name, target)}`"),
    ]
    fallback = title + (f" (target {target})" if target else "") + (f": {reason}" if reason else "")
    return {"text": _clip(escape(fallback), _TEXT_LIMIT), "blocks": blocks}


# The webhook port ----------------------------------------------------------------------


def _webhook_url_from_secret(value: str, secret_name: str) -> str:
    text = value.strip()
    if text.startswith("{"):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CredentialsError(f"secret {secret_name!r} is neither a webhook URL nor valid JSON") from exc
        url = parsed.get("url") if isinstance(parsed, dict) else None
        if not isinstance(url, str):
            raise CredentialsError(f'secret {secret_name!r} is JSON without a "url" field')
        text = url.strip()
    if not text.startswith(("https://", "http://")):
        # Never echo the value: it may be the secret itself with a typo.
        raise CredentialsError(f"secret {secret_name!r} does not hold a Slack webhook URL (https://...)")
    return text


def webhook_url(notifications: NotificationsConfig, credentials: Credentials) -> str | None:
    """The webhook URL from the config or its secret; None when Slack is not configured.

    Raises CredentialsError naming the secret when it cannot be read or holds no URL.
    """
    if notifications.slack_webhook_url:
        return notifications.slack_webhook_url
    if not notifications.slack_webhook_secret:
        return None
    secret_name = notifications.slack_webhook_secret
    return _webhook_url_from_secret(credentials.secret_text(secret_name), secret_name)


@dataclass(frozen=True)
class SlackWebhook:
    """Posts payloads to one incoming webhook; every failure is a SlackDeliveryError."""

    url: str
    timeout: float = SLACK_TIMEOUT_SECONDS

    def __repr__(self) -> str:  # the dataclass default would print the secret URL
        return f"SlackWebhook(timeout={self.timeout})"

    def post(self, payload: dict[str, Any]) -> None:
        # Imported here: most runs post nothing to Slack, and slack_sdk costs 15 ms of a cold start.
        from slack_sdk.errors import SlackClientError
        from slack_sdk.webhook import WebhookClient

        # slack_sdk types timeout as int, but urllib takes any float; tests use sub-second ones.
        client = WebhookClient(self.url, timeout=self.timeout, logger=_SLACK_SDK_LOGGER)  # type: ignore[arg-type]
        try:
            response = client.send_dict(payload)
        except TimeoutError as exc:
            raise SlackDeliveryError(f"Slack webhook did not answer within {self.timeout:g} s") from exc
        except OSError as exc:  # URLError (refused, DNS), connection reset: all OSError
            reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
            if isinstance(reason, TimeoutError):
                raise SlackDeliveryError(f"Slack webhook did not answer within {self.timeout:g} s") from exc
            raise SlackDeliveryError(f"Slack webhook unreachable: {reason}") from exc
        except http.client.HTTPException as exc:
            raise SlackDeliveryError(f"Slack webhook broke the HTTP exchange: {type(exc).__name__}") from exc
        except SlackClientError as exc:
            # Its messages can contain the URL; the type name is all that is safe to show.
            raise SlackDeliveryError(f"Slack webhook request rejected: {type(exc).__name__}") from exc
        if response.status_code != 200:
            body = _clip(str(response.body or "").strip(), 200)
            raise SlackDeliveryError(f"Slack webhook answered HTTP {response.status_code}: {body}")
