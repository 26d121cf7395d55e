"""task-failed Lambda: the Fargate state machine's failure step. A task that could not write
its own record (non-zero exit, OOM kill, stop, timeout) gets a `failed` record and the notice."""

from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.core.observability import logger, metrics, tracer
from drsentry.jobs.fargate.task_failed import TaskFailure, record_task_failure
from drsentry.jobs.lambda_container import LambdaContainer

container = LambdaContainer()


@logger.inject_lambda_context(log_event=True)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_parser(model=TaskFailure)
def lambda_handler(event: TaskFailure, context: LambdaContext) -> dict[str, Any]:
    return record_task_failure(container.runtime(context), event).model_dump(mode="json")
