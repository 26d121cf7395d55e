"""Backup Lambda: pg_dump every scheduled target to S3 and record it in the catalog."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.core.events import ScheduledEvent
from drsentry.core.observability import logger, metrics, tracer
from drsentry.jobs.backup.job import run_scheduled_backup
from drsentry.jobs.lambda_container import LambdaContainer

# Clients, the secrets cache and the config live as long as the container: warm invocations reuse them.
container = LambdaContainer()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_parser(model=ScheduledEvent)
def lambda_handler(event: ScheduledEvent, context: LambdaContext) -> dict[str, Any]:
    return run_scheduled_backup(container.runtime(context), event).document()
