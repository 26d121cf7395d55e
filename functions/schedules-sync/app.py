"""Schedules-sync Lambda: on every change of the config parameter, the stack's schedule group made
to match it (the same code as `drsentry schedules sync`)."""

import os
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from aws_lambda_powertools.utilities.typing import LambdaContext

from drsentry.adapters.aws import AwsClients
from drsentry.core.config import parse_config
from drsentry.core.observability import logger, tracer
from drsentry.jobs.lambda_container import config_parameter, read_config_text
from drsentry.jobs.schedules.job import plan_document, sync_schedules
from drsentry.jobs.schedules.rules import Deployment

deployment = Deployment.from_environment(os.environ)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.EVENT_BRIDGE)
@tracer.capture_lambda_handler
@event_parser(model=EventBridgeModel)
def lambda_handler(event: EventBridgeModel, context: LambdaContext) -> dict[str, Any]:
    name = config_parameter()
    # The parameter just changed: read it now, not from the cache of a warm container.
    config = parse_config(read_config_text(name, fresh=True), source=f"ssm:{name}")
    plan = sync_schedules(config, AwsClients(config.storage.region), deployment)
    return plan_document(plan, deployment.group, dry_run=False)
