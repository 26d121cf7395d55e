"""Scheduled events: what EventBridge Scheduler delivers, and what the CLI builds.

The schedules in template.yaml send an EventBridge-shaped input whose `id` is the
scheduler's execution id, which stays the same when Scheduler retries a delivery; that
id is the idempotency key, so a retried schedule never doubles a run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from pydantic import BaseModel, ConfigDict, ValidationError

from drsentry.core.config import format_validation_error
from drsentry.core.errors import BadInput

SCHEDULE_SOURCE = "drsentry.schedule"


class ScheduledDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str | None = None
    dry_run: bool = False


class ScheduledEvent(EventBridgeModel):
    detail: ScheduledDetail


def scheduled_event(
    target: str | None = None,
    *,
    event_id: str | None = None,
    dry_run: bool = False,
    region: str = "us-east-1",
) -> dict[str, Any]:
    """The event the CLI hands to the same code path the Lambda runs."""
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
    try:
        return parse(event=event, model=ScheduledEvent)
    except ValidationError as exc:
        raise BadInput(format_validation_error("event", exc)) from exc
