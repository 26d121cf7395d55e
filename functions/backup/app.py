"""Backup Lambda: pg_dump every scheduled target to S3 and record it in the catalog."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.core.observability import logger, metrics, tracer
from drsentry.jobs.backup.job import run_scheduled_backup
from drsentry.jobs.lambda_container import lambda_runtime


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_scheduled_backup(lambda_runtime(context), event)
