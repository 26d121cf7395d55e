"""Replication checks: one record per hourly check and target, and the window of backups
a check reads.

A check's record sorts by time in the target's partition (kept 90 days). The window is one
key range of the target's backups, because backup ids begin with their start time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from drsentry.adapters.table.items import Table
from drsentry.adapters.table.keys import (
    KIND,
    PK,
    REPLICATION_KIND,
    REPLICATION_SK_PREFIX,
    SK,
    TTL_ATTRIBUTE,
    backups_started_from,
    replication_check_sk,
    target_pk,
)
from drsentry.core.records import BackupRecord, parse_iso

KEEP_FOR = timedelta(days=90)


class ReplicationChecks:
    def __init__(self, table: Table) -> None:
        self.table = table

    def save(self, target: str, checked_at: str, run_id: str, fields: dict[str, Any]) -> None:
        """Store one check's result (`fields`, as the check reports it)."""
        item = {
            **fields,
            PK: target_pk(target),
            SK: replication_check_sk(checked_at, run_id),
            KIND: REPLICATION_KIND,
            TTL_ATTRIBUTE: int((parse_iso(checked_at) + KEEP_FOR).timestamp()),
        }
        self.table.put(item, f"writing the replication check of {target}")

    def latest(self, target: str) -> dict[str, Any] | None:
        """The fields of the newest check of a target, or None."""
        checks = self.table.query(
            f"reading the replication checks of {target}",
            KeyConditionExpression=f"{PK} = :pk AND begins_with({SK}, :prefix)",
            ExpressionAttributeValues={
                ":pk": {"S": target_pk(target)},
                ":prefix": {"S": REPLICATION_SK_PREFIX},
            },
            ScanIndexForward=False,
            Limit=1,
        )
        return next(checks, None)

    def backups_in_window(
        self, target: str, window_start: datetime, fields: Sequence[str], detail_fields: Sequence[str]
    ) -> list[BackupRecord]:
        """Completed backups started at or after `window_start`, newest first, page by page.

        Only `fields` of each record, and `detail_fields` of its ``replica_detail``, are read:
        the listing stays small even when records carry row counts for hundreds of tables.
        """
        names = {f"#f{index}": field for index, field in enumerate(fields)}
        detail_names = {f"#d{index}": field for index, field in enumerate(detail_fields)}
        projection = [*names, *(f"#detail.{name}" for name in detail_names)]
        low, high = backups_started_from(window_start)
        items = self.table.query(
            f"listing the backups of {target}",
            KeyConditionExpression=f"{PK} = :pk AND {SK} BETWEEN :low AND :high",
            FilterExpression="#status = :completed",
            ProjectionExpression=", ".join(projection),
            ExpressionAttributeNames={
                **names,
                **detail_names,
                "#detail": "replica_detail",
                "#status": "status",
            },
            ExpressionAttributeValues={
                ":pk": {"S": target_pk(target)},
                ":low": {"S": low},
                ":high": {"S": high},
                ":completed": {"S": "completed"},
            },
            ScanIndexForward=False,
        )
        return [
            BackupRecord.model_validate({**item, "target": target, "status": "completed"}) for item in items
        ]
