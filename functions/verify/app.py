"""Verify Lambda: restore the newest backup of every scheduled target into a scratch database,
check it, record the result in the verification log and drop the scratch database."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.core.events import ScheduledEvent
from drsentry.core.observability import logger, metrics, tracer
from drsentry.jobs.lambda_container import LambdaContainer
from drsentry.jobs.verify.job import run_scheduled_verify

# Clients, the secrets cache and the config live as long as the container: warm invocations reuse them.
container = LambdaContainer()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_parser(model=ScheduledEvent)
def lambda_handler(event: ScheduledEvent, context: LambdaContext) -> dict[str, Any]:
    return run_scheduled_verify(container.runtime(context), event).document()
