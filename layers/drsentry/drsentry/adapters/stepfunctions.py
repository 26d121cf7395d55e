"""The state machine that runs a target as an ECS Fargate task (infra/statemachine/).

A Lambda that hands a target to Fargate starts one execution and returns. A retried schedule
does not start a second one: the run's idempotency guard (jobs/runner.py) returns the first
run's result before any target is placed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from drsentry.adapters.aws_errors import AWS_ERRORS, describe
from drsentry.core.errors import HandOffFailed

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

# Step Functions: execution names are at most 80 characters.
NAME_LIMIT = 80


class StateMachine:
    """One Step Functions state machine, by ARN."""

    def __init__(self, client: SFNClient, arn: str) -> None:
        self.client = client
        self.arn = arn

    def start(self, name: str, execution_input: dict[str, Any]) -> str:
        """Start an execution; its ARN."""
        name = name[:NAME_LIMIT]
        try:
            response = self.client.start_execution(
                stateMachineArn=self.arn, name=name, input=json.dumps(execution_input, sort_keys=True)
            )
        except AWS_ERRORS as exc:
            raise HandOffFailed(f"starting {self.arn} ({name}) failed: {describe(exc)}") from exc
        return response["executionArn"]
