"""Alert states: what Slack was last told about one source (backup, verify, ...) and target,
so the notifier repeats a failure only every ``repeat_after`` and posts the recovery once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from drsentry.adapters.aws_errors import AWS_ERRORS
from drsentry.adapters.table.items import Table, from_item
from drsentry.adapters.table.keys import (
    ALERT_STATE_KIND,
    ALERT_STATE_SK,
    KIND,
    PK,
    SK,
    TTL_ATTRIBUTE,
    alert_state_pk,
    key,
)

# Long enough to outlive any sane repeat_after; a stale target's state then disappears.
KEEP_FOR = timedelta(days=90)


class AlertStates:
    def __init__(self, table: Table) -> None:
        self.table = table

    def load(self, source: str, target: str) -> dict[str, Any] | None:
        """The stored state's fields, or None when Slack was never told anything."""
        try:
            response = self.table.client.get_item(
                TableName=self.table.name,
                Key=key(alert_state_pk(source, target), ALERT_STATE_SK),
                ConsistentRead=True,
            )
        except AWS_ERRORS as exc:
            raise self.table.error(f"reading the alert state of {source} {target}", exc) from exc
        item = response.get("Item")
        return from_item(item) if item else None

    def save(
        self, source: str, target: str, state: dict[str, Any], *, run_id: str, saved_at: datetime
    ) -> None:
        """Store what Slack was just told (`state`), by the run `run_id`."""
        fields = {
            **state,
            PK: alert_state_pk(source, target),
            SK: ALERT_STATE_SK,
            KIND: ALERT_STATE_KIND,
            "source": source,
            "target": target,
            "run_id": run_id,
            TTL_ATTRIBUTE: int((saved_at + KEEP_FOR).timestamp()),
        }
        self.table.put(fields, f"writing the alert state of {source} {target}")
