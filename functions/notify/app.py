"""notify Lambda: posts CloudWatch alarm state changes on the alerts topic to Slack.

Runs publish their own notices to SNS and Slack; this function skips those, so nothing is
posted twice (the route is described in drsentry.jobs.notify).
"""

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import SnsModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.core.observability import logger, metrics, tracer
from drsentry.jobs.lambda_container import LambdaContainer
from drsentry.jobs.notify.topic import TopicOutcome, handle_topic_message

# The Slack webhook secret stays cached with the container's clients: one read, not one per alarm.
container = LambdaContainer()


@logger.inject_lambda_context(log_event=False)
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
@event_parser(model=SnsModel)
def lambda_handler(event: SnsModel, context: LambdaContext) -> list[TopicOutcome]:
    runtime = container.runtime(context)
    return [
        handle_topic_message(
            runtime.config, runtime.clients, str(record.Sns.Message), credentials=runtime.credentials
        )
        for record in event.Records
    ]
