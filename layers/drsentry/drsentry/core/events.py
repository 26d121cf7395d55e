"""Scheduled events: what EventBridge Scheduler delivers, and what the CLI builds.

The schedules in template.yaml send an EventBridge-shaped input whose `id` is the
scheduler's execution id, which stays the same when Scheduler retries a delivery; that
id is the idempotency key, so a retried schedule never doubles a run.

The handlers parse it with Powertools' ``event_parser(model=ScheduledEvent)``; the CLI
builds the same JSON and parses it with the same model, so both take one code path.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, ModelWrapValidatorHandler, ValidationError, model_validator

from drsentry.core.config import format_validation_error
from drsentry.core.errors import BadInput

SCHEDULE_SOURCE = "drsentry.schedule"


class ScheduledDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str | None = None
    dry_run: bool = False


class ScheduledEvent(EventBridgeModel):
    detail: ScheduledDetail

    # An event of the wrong shape is bad input (exit 2, one line naming the field), not a
    # pydantic traceback: raised from here, it reaches the caller of Powertools' parser as is.
    @model_validator(mode="wrap")
    @classmethod
    def _bad_event_is_bad_input(cls, data: Any, handler: ModelWrapValidatorHandler[ScheduledEvent]) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            raise BadInput(format_validation_error("event", exc)) from exc

    @classmethod
    def now(
        cls,
        target: str | None = None,
        *,
        event_id: str | None = None,
        dry_run: bool = False,
        region: str = "us-east-1",
    ) -> ScheduledEvent:
        """The event a run started by hand (the CLI, a test) hands to the scheduled code path."""
        return parse_scheduled_event(
            scheduled_event(target, event_id=event_id, dry_run=dry_run, region=region)
        )


def scheduled_event(
    target: str | None = None,
    *,
    event_id: str | None = None,
    dry_run: bool = False,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """The JSON EventBridge Scheduler delivers (what a handler is invoked with)."""
    return {
        "version": "0",
        "id": event_id or str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": SCHEDULE_SOURCE,
        "account": "000000000000",
        "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [],
        "detail": {"target": target, "dry_run": dry_run},
    }


def parse_scheduled_event(event: Any) -> ScheduledEvent:
    """BadInput naming the field when the event is not a scheduled event."""
    return parse(event=event, model=ScheduledEvent)
