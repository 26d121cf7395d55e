"""The verification record and the verification log in the catalog table.

The successor of the seeds' ``backup_verification_log``: ``latest(target)`` replaces
``get_latest_backup_verification()`` and ``history(target, days)`` replaces
``get_backup_verification_history(days)``.

Keys (single-table, beside the backups): pk = ``target#{name}``,
sk = ``verify#{verified_at}#{id}``, so one target's verifications sort by time and a
day range is one key-range query. Items carry ``kind = verification`` so the
``backup_id-index`` GSI (which sees them too) never mistakes one for a backup.
Records expire after 90 days through the table's ``expires_at`` TTL.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from drsentry.adapters.catalog import TTL_ATTRIBUTE, from_item, to_item
from drsentry.core.errors import CatalogError
from drsentry.core.records import iso, parse_iso, utc_now

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from drsentry.jobs.runtime import Runtime

KEEP_FOR = timedelta(days=90)
SK_PREFIX = "verify#"
KIND = "verification"

VerificationStatus = Literal["success", "warning", "failure"]
CheckSeverity = Literal["critical", "warning"]
# "skipped": not run because an earlier step failed (the detail says which).
CheckStatus = Literal["passed", "failed", "skipped"]


class Check(BaseModel):
    """One entry of a verification record's ``checks``."""

    name: str
    severity: CheckSeverity
    status: CheckStatus
    detail: str = ""


def new_verification_id() -> str:
    """Milliseconds since the epoch (hex) then randomness: records of one second still sort by time."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


class VerificationRecord(BaseModel):
    """CONTRACT.md "Records": what `verifications list --json` prints, one per verification."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=new_verification_id)
    target: str
    backup_id: str
    verified_at: str
    backup_age_hours: float | None = None
    backup_size_mb: float | None = None
    status: VerificationStatus
    checks_passed: int = 0
    checks_failed: int = 0
    restore_seconds: float | None = None
    checks: list[Check] = Field(default_factory=list)
    error_details: str | None = None

    @property
    def failed_checks(self) -> list[Check]:
        return [check for check in self.checks if check.status == "failed"]


def derive_status(checks: list[Check]) -> VerificationStatus:
    """Any failed critical check makes `failure`; otherwise any failed warning check makes
    `warning`; else `success`. No checks at all proves nothing, so that is a `failure` too."""
    if not checks or any(c.status == "failed" and c.severity == "critical" for c in checks):
        return "failure"
    if any(c.status == "failed" for c in checks):
        return "warning"
    return "success"


class VerificationLog:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def _fail(self, action: str, exc: ClientError | BotoCoreError) -> CatalogError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
        else:
            reason = str(exc)
        return CatalogError(f"catalog table {self.table_name!r}: {action} failed: {reason}")

    def put(self, record: VerificationRecord) -> None:
        expires_at = int((parse_iso(record.verified_at) + KEEP_FOR).timestamp())
        fields = record.model_dump()
        fields.update(
            pk=f"target#{record.target}",
            sk=f"{SK_PREFIX}{record.verified_at}#{record.id}",
            kind=KIND,
            **{TTL_ATTRIBUTE: expires_at},
        )
        try:
            self.client.put_item(TableName=self.table_name, Item=to_item(fields))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"writing verification {record.id} of backup {record.backup_id}", exc) from exc

    def iter(self, target: str, since: str | None = None) -> Iterator[VerificationRecord]:
        """A target's verifications, newest first; only those at or after `since` (ISO) if given."""
        if since is None:
            condition = "pk = :pk AND begins_with(sk, :low)"
            values = {":pk": {"S": f"target#{target}"}, ":low": {"S": SK_PREFIX}}
        else:
            # '~' sorts after every character of an ISO timestamp, closing the range.
            condition = "pk = :pk AND sk BETWEEN :low AND :high"
            values = {
                ":pk": {"S": f"target#{target}"},
                ":low": {"S": f"{SK_PREFIX}{since}"},
                ":high": {"S": f"{SK_PREFIX}~"},
            }
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression=condition,
            ExpressionAttributeValues=values,
            ScanIndexForward=False,
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    yield VerificationRecord.model_validate(from_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"reading verifications of {target}", exc) from exc

    def latest(self, target: str) -> VerificationRecord | None:
        """The newest verification of a target (any status), or None."""
        return next(self.iter(target), None)

    def history(self, target: str, days: float, now: datetime | None = None) -> list[VerificationRecord]:
        """A target's verifications of the last `days` days, newest first."""
        since = iso((now or utc_now()) - timedelta(days=days))
        return list(self.iter(target, since=since))


def verification_log(runtime: Runtime) -> VerificationLog:
    """The log lives in the catalog table, next to the backups it verifies."""
    return VerificationLog(runtime.catalog.client, runtime.catalog.table_name)
