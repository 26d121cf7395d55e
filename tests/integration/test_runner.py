"""The scheduled-run loop every job shares (jobs/runner.py): which targets run, once per
event, and one failure rule: a target that cannot run is contained, recorded and alerted
with exactly one notice, and the other targets still run."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest
from fault_proxy import FaultProxy, Rule, dynamodb
from pydantic import BaseModel

from drsentry.adapters.aws import AwsClients
from drsentry.core.config import Config, TargetConfig
from drsentry.core.errors import BadInput, CatalogError, StorageError
from drsentry.core.events import ScheduledEvent
from drsentry.jobs.archive.job import run_scheduled_archive
from drsentry.jobs.replication.job import run_scheduled_replication_check
from drsentry.jobs.runner import RunResult, run_for_targets
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.jobs.verify.job import run_scheduled_verify

pytestmark = pytest.mark.integration

NO_SOURCE = "postgresql://nobody@127.0.0.1:1/none"  # no test here dumps or restores a database
FEW_ATTEMPTS = 2


class Tally(BaseModel):
    target: str
    rows: int


class TallyResult(RunResult[Tally]):
    records_key: ClassVar[str] = "tallies"


def two_targets(config: Config) -> Config:
    app = config.targets[0]
    return config.model_copy(update={"targets": [app, app.model_copy(update={"name": "billing"})]})


def subscribe(runtime: Runtime) -> Callable[[], list[dict[str, Any]]]:
    """An SQS queue on the alerts topic; returns a reader of every notice received so far."""
    sqs = runtime.clients.client("sqs")
    queue_url = sqs.create_queue(QueueName=f"runner-{secrets.token_hex(4)}")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    runtime.clients.sns.subscribe(
        TopicArn=str(runtime.config.notifications.sns_topic_arn), Protocol="sqs", Endpoint=queue_arn
    )
    received: list[dict[str, Any]] = []

    def notices() -> list[dict[str, Any]]:
        while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                received.append(json.loads(json.loads(message["Body"])["Message"]))
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
        return received

    return notices


@pytest.fixture
def proxy(aws_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    with FaultProxy(aws_endpoint) as fault_proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
        yield fault_proxy


def test_a_target_that_cannot_run_is_alerted_once_and_the_others_still_run(make_config: Any) -> None:
    # Given two targets, the first of which cannot reach its catalog
    config, _ = make_config(NO_SOURCE)
    runtime = build_runtime(two_targets(config))
    notices = subscribe(runtime)
    ran: list[str] = []

    def count(target: TargetConfig) -> list[Tally]:
        ran.append(target.name)
        if target.name == "app":
            raise CatalogError("catalog table 'x': reading failed: InternalServerError")
        return [Tally(target=target.name, rows=7)]

    # When the scheduled run goes over all targets
    result = run_for_targets(runtime, "verify", ScheduledEvent.now(), count, result_type=TallyResult)

    # Then the other target still ran, and the run says what became of each
    assert ran == ["app", "billing"]
    assert [(o.target, o.outcome) for o in result.outcomes] == [("app", "not_run"), ("billing", "ran")]
    assert result.not_run[0].reason == "catalog table 'x': reading failed: InternalServerError"
    assert result.records == [Tally(target="billing", rows=7)]
    # ... and exactly one notice says the target could not run
    (notice,) = notices()
    assert (notice["source"], notice["target"], notice["severity"], notice["status"]) == (
        "verify",
        "app",
        "critical",
        "failed",
    )
    assert notice["summary"] == (
        "verify of app could not run: catalog table 'x': reading failed: InternalServerError"
    )
    # ... and the document keeps the records under the job's key, the side lists beside them
    document = result.document()
    assert document["tallies"] == [{"target": "billing", "rows": 7}]
    assert document["not_run"] == [{"target": "app", "reason": result.not_run[0].reason}]
    assert document["skipped"] == []


def test_a_retried_event_returns_the_stored_typed_result_without_running_again(make_config: Any) -> None:
    config, _ = make_config(NO_SOURCE)
    event = ScheduledEvent.now()
    ran: list[str] = []

    def count(target: TargetConfig) -> list[Tally]:
        ran.append(target.name)
        if len(ran) > 1:
            raise StorageError("s3://x: unreachable")  # the retry must not get here
        return [Tally(target=target.name, rows=len(ran))]

    first = run_for_targets(build_runtime(config), "archive", event, count, result_type=TallyResult)
    again = run_for_targets(build_runtime(config), "archive", event, count, result_type=TallyResult)

    assert ran == ["app"]
    assert isinstance(again, TallyResult)
    assert again == first
    assert again.records == [Tally(target="app", rows=1)]


def test_bad_input_propagates_and_the_event_can_run_again(make_config: Any) -> None:
    # Given a run whose work finds the input wrong for every target
    config, _ = make_config(NO_SOURCE)
    event = ScheduledEvent.now()

    def refuse(_target: TargetConfig) -> list[Tally]:
        raise BadInput("target 'app' has nothing to do")

    # Then it is not contained: it reaches the caller (exit 2 on the CLI), nobody is alerted ...
    runtime = build_runtime(config)
    notices = subscribe(runtime)
    with pytest.raises(BadInput, match="nothing to do"):
        run_for_targets(runtime, "backup", event, refuse, result_type=TallyResult)
    assert notices() == []

    # ... and no result was stored for the event: once fixed, its redelivery runs
    result = run_for_targets(
        build_runtime(config),
        "backup",
        event,
        lambda target: [Tally(target=target.name, rows=1)],
        result_type=TallyResult,
    )
    assert [outcome.outcome for outcome in result.outcomes] == ["ran"]


def test_verify_skips_a_locked_target_with_one_warning(make_config: Any) -> None:
    # Given another verify run holding the target's lock
    config, _ = make_config(NO_SOURCE)
    runtime = build_runtime(config)
    runtime.catalog.locks.acquire("app", "other-run", ttl_seconds=600, job="verify")
    notices = subscribe(runtime)

    # When the scheduled verify runs
    result = run_scheduled_verify(build_runtime(config), ScheduledEvent.now())

    # Then the target is skipped (named for the job), and people hear of it once, as a warning
    (skipped,) = result.skipped
    assert skipped.target == "app"
    assert skipped.reason is not None
    assert skipped.reason.startswith("another verify run of target 'app' is running (lock held)")
    assert result.records == []
    (notice,) = notices()
    assert (notice["source"], notice["severity"], notice["status"]) == ("verify", "warning", "skipped")
    assert notice["summary"].startswith("verify of app skipped: another verify run of target 'app'")


def test_a_target_without_the_jobs_section_is_not_configured_unless_named(make_config: Any) -> None:
    config, _ = make_config(NO_SOURCE, verify=None)
    runtime = build_runtime(config)
    notices = subscribe(runtime)

    result = run_scheduled_verify(runtime, ScheduledEvent.now())

    assert result.not_configured == ["app"]
    assert result.records == [] and result.not_run == [] and result.skipped == []
    assert notices() == []
    with pytest.raises(BadInput, match="target 'app' has no verify section"):
        run_scheduled_verify(build_runtime(config), ScheduledEvent.now("app"))


def test_replication_check_without_a_replica_checks_nothing_and_refuses_a_named_target(
    make_config: Any,
) -> None:
    config, _ = make_config(NO_SOURCE)
    config = config.model_copy(update={"storage": config.storage.model_copy(update={"replica": None})})

    result = run_scheduled_replication_check(build_runtime(config), ScheduledEvent.now())

    assert result.status == "not-configured"
    assert result.document()["status"] == "not-configured"
    assert result.not_configured == ["app"]
    with pytest.raises(BadInput, match="storage.replica is not configured"):
        run_scheduled_replication_check(build_runtime(config), ScheduledEvent.now("app"))


def test_replication_check_of_a_target_whose_catalog_read_fails_does_not_stop_the_others(
    make_config: Any, proxy: FaultProxy
) -> None:
    # Given two targets, and DynamoDB failing every read of the first one's backups
    config, _ = make_config(NO_SOURCE)
    config = two_targets(config)
    runtime = build_runtime(config, clients=AwsClients(config.storage.region, max_attempts=FEW_ATTEMPTS))
    notices = subscribe(runtime)
    proxy.add(Rule(dynamodb("Query", b'"target#app"'), "status", status=500))

    # When the hourly check runs over all targets
    result = run_scheduled_replication_check(runtime, ScheduledEvent.now())

    # Then the second target is still checked, the first is recorded as not run ...
    assert [(o.target, o.outcome) for o in result.outcomes] == [("app", "not_run"), ("billing", "ran")]
    assert [report.target for report in result.records] == ["billing"]
    assert "listing the backups of app failed" in (result.not_run[0].reason or "")
    assert result.status == "failure"  # a target nobody could check is not known to be safe
    # ... with one critical notice for it, beside the other target's own report
    by_target = {notice["target"]: notice for notice in notices()}
    assert len(notices()) == 2
    assert by_target["app"]["severity"] == "critical"
    assert by_target["app"]["summary"].startswith("replication-check of app could not run: catalog table")
    assert by_target["billing"]["source"] == "replication-check"


def test_archive_of_a_target_that_cannot_be_planned_counts_a_failure_and_alerts_once(
    make_config: Any, proxy: FaultProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given DynamoDB failing every read of the target's backups
    config, _ = make_config(NO_SOURCE)
    runtime = build_runtime(config, clients=AwsClients(config.storage.region, max_attempts=FEW_ATTEMPTS))
    notices = subscribe(runtime)
    proxy.add(Rule(dynamodb("Query", b'"target#app"'), "status", status=500))

    # When the daily archive run comes
    result = run_scheduled_archive(runtime, ScheduledEvent.now())

    # Then the target is recorded as not run, its alarm sees a failure, people get one notice
    assert [(o.target, o.outcome) for o in result.outcomes] == [("app", "not_run")]
    assert result.records == []
    archive_failures = [
        json.loads(line)["ArchiveFailure"]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("{") and '"ArchiveFailure"' in line
    ]
    assert archive_failures == [[1.0]]  # one EMF document, the value as a one-element list
    (notice,) = notices()
    assert (notice["source"], notice["severity"]) == ("archive", "critical")
    assert notice["summary"].startswith("archive of app could not run: catalog table")
