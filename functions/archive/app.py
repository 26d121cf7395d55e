"""Archive Lambda: apply GFS retention: copy monthly backups to the archive, expire the rest."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.core.observability import logger, metrics, tracer
from drsentry.jobs.archive.job import run_scheduled_archive
from drsentry.jobs.lambda_container import lambda_runtime


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_scheduled_archive(lambda_runtime(context), event)
