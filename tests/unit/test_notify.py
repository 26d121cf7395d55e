"""What Slack shows and when it hears about a run: formatting and the repeat decision, no network."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from drsentry.adapters.slack import SlackWebhook, format_alarm, format_notice, human_duration, webhook_url
from drsentry.core.errors import CredentialsError
from drsentry.core.records import RunNotice, iso
from drsentry.jobs.notify.rules import AlertState, decide, next_state, sns_subject
from drsentry.jobs.notify.topic import handle_topic_message

NOW = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
SIX_HOURS = timedelta(hours=6)


def verify_failure(**overrides: Any) -> RunNotice:
    fields: dict[str, Any] = {
        "source": "verify",
        "target": "app",
        "severity": "critical",
        "status": "failure",
        "summary": "verification of 20261122T170000Z-1a2b3c4d failed: 2 of 9 checks",
        "details": {
            "backup_id": "20261122T170000Z-1a2b3c4d",
            "backup_age_hours": 2.5,
            "rpo_hours": 1,
            "restore_seconds": 312,
            "rto_seconds": 900,
        },
        "run_id": "run-1",
    }
    fields.update(overrides)
    return RunNotice.model_validate(fields)


def all_text(payload: dict[str, Any]) -> str:
    """Everything a person can read in the message, as one string."""
    return json.dumps(payload, ensure_ascii=False)


def fields_of(payload: dict[str, Any]) -> dict[str, str]:
    """Block Kit fields as {title: value}."""
    found: dict[str, str] = {}
    for block in payload["blocks"]:
        for field in block.get("fields", []):
            title, _, value = field["text"].partition("\n")
            found[title.strip("*")] = value
    return found


def header_of(payload: dict[str, Any]) -> str:
    header = payload["blocks"][0]
    assert header["type"] == "header"
    return str(header["text"]["text"])


# Run notices ---------------------------------------------------------------------------


def test_failure_message_names_target_checks_backup_and_objectives() -> None:
    # Given a failed verification with two failing checks
    notice = verify_failure()

    # When it is formatted for Slack
    payload = format_notice(notice, kind="failure", failing_checks=["critical tables", "row counts"])

    # Then the header, the fields and the hint tell an operator what failed and where to look
    assert header_of(payload) == ":red_circle: Verification failed: app"
    fields = fields_of(payload)
    assert fields["Failing checks"] == "critical tables, row counts"
    assert fields["Backup"] == "`20261122T170000Z-1a2b3c4d`"
    assert fields["Backup age"] == "2.5 h (RPO 1 h, *over*)"
    assert fields["Restore time"] == "5.2 min (RTO 15 min, within)"
    assert "drsentry verifications list --target app" in all_text(payload)
    assert "critical tables, row counts" in payload["text"]


def test_warning_message_is_marked_as_a_warning() -> None:
    notice = verify_failure(severity="warning", status="warning")

    payload = format_notice(notice, kind="warning", failing_checks=["recent rows"])

    assert header_of(payload) == ":warning: Verification warning: app"
    assert fields_of(payload)["Status"] == "warning"


def test_recovered_message_has_no_failing_checks() -> None:
    notice = verify_failure(severity="info", status="success", summary="all 9 checks passed")

    payload = format_notice(notice, kind="recovered", failing_checks=[])

    assert header_of(payload) == ":white_check_mark: Verification recovered: app"
    assert "Failing checks" not in fields_of(payload)
    assert "all 9 checks passed" in payload["text"]


def test_backup_failure_shows_its_error_and_points_at_the_backup_list() -> None:
    notice = RunNotice(
        source="backup",
        target="app",
        severity="critical",
        status="failed",
        summary="backup failed",
        details={"error": "pg_dump: error: connection to server failed"},
        run_id="run-2",
    )

    payload = format_notice(notice, kind="failure", failing_checks=["backup"])

    assert "pg_dump: error: connection to server failed" in all_text(payload)
    assert "drsentry backups list --target app" in all_text(payload)


def test_reminder_says_it_is_the_same_failure_since_first_report() -> None:
    payload = format_notice(
        verify_failure(),
        kind="failure",
        failing_checks=["row counts"],
        repeat_since="2026-11-22T06:00:00Z",
        repeat_after=SIX_HOURS,
    )

    assert "Still the same failure, first reported 2026-11-22T06:00:00Z; reminded every 6h" in all_text(
        payload
    )


def test_slack_control_characters_in_user_text_are_escaped() -> None:
    notice = verify_failure(summary="assertion <count> & more failed")

    payload = format_notice(notice, kind="failure", failing_checks=["a<b"])

    assert "assertion &lt;count&gt; &amp; more failed" in all_text(payload)
    assert fields_of(payload)["Failing checks"] == "a&lt;b"


def test_long_summary_and_target_fit_slack_limits() -> None:
    notice = verify_failure(target="t" * 63, summary="x" * 10_000)

    payload = format_notice(notice, kind="failure", failing_checks=[f"check {i}" for i in range(500)])

    assert len(header_of(payload)) <= 150
    assert all(len(block.get("text", {}).get("text", "")) <= 3000 for block in payload["blocks"])
    assert all(len(field["text"]) <= 2000 for block in payload["blocks"] for field in block.get("fields", []))


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(42, "42 s"), (312, "5.2 min"), (3600, "1 h"), (9000, "2.5 h"), (86400 * 3, "3 d")],
)
def test_durations_read_like_a_person_writes_them(seconds: float, shown: str) -> None:
    assert human_duration(seconds) == shown


def test_sns_subject_is_short_ascii() -> None:
    subject = sns_subject(verify_failure(status="failure\nwith ünïcode " + "z" * 200))

    assert subject.startswith("drsentry critical: verify app failure with")
    assert len(subject) < 100
    assert subject.isascii()
    assert "\n" not in subject


# The repeat decision -----------------------------------------------------------------


def told(
    severity: str = "critical", checks: list[str] | None = None, ago: timedelta = timedelta(0)
) -> AlertState:
    return AlertState.model_validate(
        {
            "severity": severity,
            "status": "failure" if severity != "info" else "success",
            "failing_checks": checks if checks is not None else ["row counts"],
            "since": iso(NOW - ago - timedelta(hours=12)),
            "last_slack_at": iso(NOW - ago),
        }
    )


def decision(previous: AlertState | None, severity: str = "critical", checks: list[str] | None = None) -> str:
    status = {"critical": "failure", "warning": "warning", "info": "success"}[severity]
    return decide(
        previous,
        severity=severity,  # type: ignore[arg-type]
        status=status,
        failing_checks=checks if checks is not None else ["row counts"],
        now=NOW,
        repeat_after=SIX_HOURS,
    )


def test_first_failure_alerts() -> None:
    assert decision(None) == "alert"


def test_same_failure_within_repeat_after_is_suppressed() -> None:
    assert decision(told(ago=timedelta(hours=5, minutes=59))) == "suppress"


def test_same_failure_after_repeat_after_is_repeated() -> None:
    assert decision(told(ago=SIX_HOURS)) == "remind"


def test_a_different_set_of_failing_checks_alerts_at_once() -> None:
    assert decision(told(ago=timedelta(minutes=1)), checks=["row counts", "critical tables"]) == "alert"


def test_the_order_checks_failed_in_does_not_make_a_new_failure() -> None:
    previous = told(checks=["a", "b"], ago=timedelta(minutes=1))

    assert decision(previous, checks=["b", "a", "b"]) == "suppress"


def test_a_warning_turning_critical_alerts_at_once() -> None:
    assert decision(told(severity="warning", ago=timedelta(minutes=1))) == "alert"


def test_first_success_after_a_failure_recovers() -> None:
    assert decision(told(ago=timedelta(minutes=1)), severity="info", checks=[]) == "recover"


def test_success_with_nothing_reported_before_stays_quiet() -> None:
    assert decision(None, severity="info", checks=[]) == "quiet"
    assert decision(told(severity="info", checks=[]), severity="info", checks=[]) == "quiet"


def test_failure_after_a_recovery_alerts() -> None:
    assert decision(told(severity="info", checks=[], ago=timedelta(minutes=1))) == "alert"


def test_a_reminder_keeps_when_the_failure_was_first_reported() -> None:
    previous = told(ago=SIX_HOURS)

    state = next_state(
        previous, "remind", severity="critical", status="failure", failing_checks=["row counts"], now=NOW
    )

    assert state is not None
    assert state.since == previous.since
    assert state.last_slack_at == iso(NOW)


def test_a_recovery_clears_the_failing_checks() -> None:
    state = next_state(told(), "recover", severity="info", status="success", failing_checks=[], now=NOW)

    assert state is not None
    assert (state.severity, state.failing_checks) == ("info", [])


def test_suppressed_runs_change_no_state() -> None:
    assert (
        next_state(told(), "suppress", severity="critical", status="failure", failing_checks=[], now=NOW)
        is None
    )


# CloudWatch alarms -------------------------------------------------------------------


def alarm_message(state: str = "ALARM", **overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "AlarmName": "drsentry-app-verification-failure",
        "AlarmDescription": "A verification of target app failed",
        "AWSAccountId": "123456789012",
        "NewStateValue": state,
        "NewStateReason": "Threshold Crossed: 1 datapoint [1.0 (22/11/26 17:00:00)] was >= threshold (1.0).",
        "StateChangeTime": "2026-11-22T17:05:00.000+0000",
        "Region": "US East (N. Virginia)",
        "OldStateValue": "OK" if state == "ALARM" else "ALARM",
        "Trigger": {
            "MetricName": "VerificationFailure",
            "Namespace": "drsentry",
            "Statistic": "SUM",
            "Dimensions": [{"value": "app", "name": "Target"}],
            "Period": 3600,
            "EvaluationPeriods": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "Threshold": 1.0,
        },
    }
    message.update(overrides)
    return message


def test_alarm_is_red_and_names_alarm_target_metric_and_reason() -> None:
    payload = format_alarm(alarm_message())

    assert header_of(payload) == ":red_circle: ALARM: drsentry-app-verification-failure"
    fields = fields_of(payload)
    assert fields["Target"] == "`app`"
    assert fields["Metric"] == "`drsentry/VerificationFailure`"
    assert fields["State"] == "OK → ALARM"
    assert "Threshold Crossed" in all_text(payload)
    assert "drsentry verifications list --target app" in all_text(payload)
    assert payload["text"].startswith(":red_circle: ALARM: drsentry-app-verification-failure (target app)")


def test_alarm_back_to_ok_is_shown_as_resolved() -> None:
    payload = format_alarm(alarm_message("OK"))

    assert header_of(payload) == ":white_check_mark: Resolved: drsentry-app-verification-failure"


def test_alarm_without_data_says_so() -> None:
    payload = format_alarm(alarm_message("INSUFFICIENT_DATA"))

    assert header_of(payload).startswith(":grey_question: Insufficient data:")


def test_alarm_on_a_metric_without_target_points_at_status() -> None:
    message = alarm_message(Trigger={"MetricName": "Errors", "Namespace": "AWS/Lambda", "Dimensions": []})

    payload = format_alarm(message)

    assert "Target" not in fields_of(payload)
    assert "drsentry status" in all_text(payload)


def test_run_notice_on_the_topic_is_not_posted_again() -> None:
    # Given the run notice a run published (the run already told Slack itself)
    message_text = verify_failure().model_dump_json()

    # When the notify function receives it; config and clients are never touched
    outcome = handle_topic_message(None, None, message_text)  # type: ignore[arg-type]

    # Then nothing is posted
    assert outcome == "run-notice-skipped"


@pytest.mark.parametrize("message_text", ["plain text from someone", "[1, 2]", '{"hello": "world"}'])
def test_unknown_messages_on_the_topic_are_ignored(message_text: str) -> None:
    assert handle_topic_message(None, None, message_text) == "unrecognised"  # type: ignore[arg-type]


# The webhook URL ---------------------------------------------------------------------


class SecretStub:
    """Stands in for drsentry.adapters.secrets.Credentials."""

    def __init__(self, value: str) -> None:
        self.value = value

    def secret_text(self, secret_name: str) -> str:
        return self.value


def notifications(**fields: Any) -> Any:
    from drsentry.core.config import NotificationsConfig

    return NotificationsConfig.model_validate(fields)


@pytest.mark.parametrize(
    "secret_value",
    ["https://hooks.slack.com/services/T1/B1/abc", '{"url": "https://hooks.slack.com/services/T1/B1/abc"}'],
)
def test_webhook_secret_may_hold_the_url_or_json_with_url(secret_value: str) -> None:
    url = webhook_url(notifications(slack_webhook_secret="drsentry/slack"), SecretStub(secret_value))  # type: ignore[arg-type]

    assert url == "https://hooks.slack.com/services/T1/B1/abc"


@pytest.mark.parametrize("secret_value", ['{"webhook": "x"}', "not a url hunter2", "{broken"])
def test_webhook_secret_without_a_url_names_the_secret_not_its_value(secret_value: str) -> None:
    with pytest.raises(CredentialsError, match="drsentry/slack") as error:
        webhook_url(notifications(slack_webhook_secret="drsentry/slack"), SecretStub(secret_value))  # type: ignore[arg-type]

    assert "hunter2" not in str(error.value)


def test_no_slack_configured_means_no_url() -> None:
    assert webhook_url(notifications(), SecretStub("unused")) is None  # type: ignore[arg-type]


def test_webhook_repr_hides_the_url() -> None:
    assert "hooks.slack.com" not in repr(SlackWebhook("https://hooks.slack.com/services/T1/B1/secret"))
