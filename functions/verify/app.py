"""Verify Lambda: restore the newest backup of every scheduled target into a scratch database,
check it, record the result in the verification log and drop the scratch database."""

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.core.observability import logger, metrics, tracer
from drsentry.jobs.lambda_container import lambda_runtime
from drsentry.jobs.verify.job import run_scheduled_verify


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return run_scheduled_verify(lambda_runtime(context), event)
