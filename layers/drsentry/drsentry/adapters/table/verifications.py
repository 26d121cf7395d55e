"""The verification log: one record per verification, beside the backups it verified.

The successor of the seeds' ``backup_verification_log``: ``latest(target)`` replaces
``get_latest_backup_verification()`` and ``history(target, days)`` replaces
``get_backup_verification_history(days)``. A target's verifications sort by time in its
partition, so a day range is one key-range query. Records expire after 90 days
(CONTRACT.md "Records") through the table's TTL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from drsentry.adapters.table.items import Table
from drsentry.adapters.table.keys import (
    KIND,
    PK,
    SK,
    TTL_ATTRIBUTE,
    VERIFICATION_KIND,
    VERIFICATION_SK_PREFIX,
    target_pk,
    verification_sk,
    verifications_since,
)
from drsentry.core.records import VerificationRecord, iso, parse_iso, utc_now

KEEP_FOR = timedelta(days=90)


class VerificationLog:
    def __init__(self, table: Table) -> None:
        self.table = table

    def put(self, record: VerificationRecord) -> None:
        fields = record.model_dump()
        fields.update(
            {
                PK: target_pk(record.target),
                SK: verification_sk(record.verified_at, record.id),
                KIND: VERIFICATION_KIND,
                TTL_ATTRIBUTE: int((parse_iso(record.verified_at) + KEEP_FOR).timestamp()),
            }
        )
        self.table.put(fields, f"writing verification {record.id} of backup {record.backup_id}")

    def iter(self, target: str, since: str | None = None) -> Iterator[VerificationRecord]:
        """A target's verifications, newest first; only those at or after `since` (ISO) if given."""
        if since is None:
            condition = f"{PK} = :pk AND begins_with({SK}, :low)"
            values = {":pk": {"S": target_pk(target)}, ":low": {"S": VERIFICATION_SK_PREFIX}}
        else:
            low, high = verifications_since(since)
            condition = f"{PK} = :pk AND {SK} BETWEEN :low AND :high"
            values = {":pk": {"S": target_pk(target)}, ":low": {"S": low}, ":high": {"S": high}}
        items = self.table.query(
            f"reading verifications of {target}",
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
        )
        for item in items:
            yield VerificationRecord.model_validate(item)

    def latest(self, target: str) -> VerificationRecord | None:
        """The newest verification of a target (any status), or None."""
        return next(self.iter(target), None)

    def history(self, target: str, days: float, now: datetime | None = None) -> list[VerificationRecord]:
        """A target's verifications of the last `days` days, newest first."""
        since = iso((now or utc_now()) - timedelta(days=days))
        return list(self.iter(target, since=since))
