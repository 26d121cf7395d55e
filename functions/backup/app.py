"""Backup Lambda: pg_dump every scheduled target to S3 and record it in the catalog."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.backup import run_scheduled_backup
from drsentry.lambda_support import lambda_runtime
from drsentry.observability import logger, metrics, tracer


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_scheduled_backup(lambda_runtime(context), event)
