"""The catalog: the backup records, and every other repository on the same table.

`Catalog` is what jobs and operator tools hold (``runtime.catalog``): the backups
themselves, and as attributes the run locks, the verification log, the replication
checks and the notifier's alert states. Keys are spelled in `keys` only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from drsentry.adapters.aws_errors import AWS_ERRORS, error_code
from drsentry.adapters.table.alert_states import AlertStates
from drsentry.adapters.table.idempotency import idempotency_persistence
from drsentry.adapters.table.items import Table, to_item
from drsentry.adapters.table.keys import (
    BACKUP_ID,
    BACKUP_ID_INDEX,
    BACKUP_KIND,
    BACKUP_SK_PREFIX,
    KIND,
    PK,
    SK,
    backup_sk,
    key,
    target_pk,
)
from drsentry.adapters.table.locks import RunLocks
from drsentry.adapters.table.replication_checks import ReplicationChecks
from drsentry.adapters.table.schema import TableDescription, describe_table
from drsentry.adapters.table.verifications import VerificationLog
from drsentry.core.errors import BackupNotFound
from drsentry.core.records import BackupRecord, check_backup_id

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
    from mypy_boto3_dynamodb import DynamoDBClient


def backup_item(record: BackupRecord) -> dict[str, Any]:
    """A backup record as stored (plain fields with its key and kind)."""
    fields = record.model_dump()
    fields.update({PK: target_pk(record.target), SK: backup_sk(record.backup_id), KIND: BACKUP_KIND})
    return fields


class Catalog:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.table = Table(client, table_name)
        self.table_name = table_name
        self.locks = RunLocks(self.table)
        self.verifications = VerificationLog(self.table)
        self.replication_checks = ReplicationChecks(self.table)
        self.alert_states = AlertStates(self.table)

    def describe(self) -> TableDescription | None:
        """Status, backup_id index and TTL of the table (`drsentry check`); None when it is missing."""
        return describe_table(self.table)

    def idempotency_persistence(self) -> DynamoDBPersistenceLayer:
        return idempotency_persistence(self.table)

    # backups -----------------------------------------------------------------

    def put_backup(self, record: BackupRecord) -> None:
        self.table.put(backup_item(record), f"writing backup record {record.backup_id}")

    def update_backup(self, target: str, backup_id: str, fields: dict[str, Any]) -> None:
        """Set some fields of an existing backup record (replica state, archive, expiry);
        a field set to None is removed."""
        if not fields:
            return
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        values = to_item({f":v{i}": value for i, value in enumerate(fields.values())})
        assignments = [f"#f{i} = :v{i}" for i in range(len(fields)) if f":v{i}" in values]
        removals = [f"#f{i}" for i in range(len(fields)) if f":v{i}" not in values]
        expression = ""
        if assignments:
            expression += "SET " + ", ".join(assignments)
        if removals:
            expression += " REMOVE " + ", ".join(removals)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": key(target_pk(target), backup_sk(backup_id)),
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeNames": names,
            "ConditionExpression": f"attribute_exists({PK})",
        }
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self.table.client.update_item(**request)
        except AWS_ERRORS as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise BackupNotFound(f"backup {backup_id} of target {target!r} not found") from exc
            raise self.table.error(f"updating backup record {backup_id}", exc) from exc

    def get_backup(self, backup_id: str) -> BackupRecord:
        check_backup_id(backup_id)
        # Verification records carry the backup_id too, so the index holds them as well;
        # a much-verified backup can spill over several pages.
        items = self.table.query(
            f"looking up backup {backup_id}",
            IndexName=BACKUP_ID_INDEX,
            KeyConditionExpression=f"{BACKUP_ID} = :id",
            FilterExpression="#kind = :backup",
            ExpressionAttributeNames={"#kind": KIND},
            ExpressionAttributeValues={":id": {"S": backup_id}, ":backup": {"S": BACKUP_KIND}},
        )
        for item in items:
            return BackupRecord.model_validate(item)
        raise BackupNotFound(f"backup {backup_id} not found in catalog {self.table_name!r}")

    def iter_backups(self, target: str) -> Iterator[BackupRecord]:
        """Every backup record of a target, newest first, page by page."""
        items = self.table.query(
            f"listing backups of {target}",
            KeyConditionExpression=f"{PK} = :pk AND begins_with({SK}, :prefix)",
            ExpressionAttributeValues={":pk": {"S": target_pk(target)}, ":prefix": {"S": BACKUP_SK_PREFIX}},
            ScanIndexForward=False,
        )
        for item in items:
            yield BackupRecord.model_validate(item)

    def list_backups(self, target: str, limit: int | None = None) -> list[BackupRecord]:
        backups: list[BackupRecord] = []
        for record in self.iter_backups(target):
            backups.append(record)
            if limit is not None and len(backups) >= limit:
                break
        return backups

    def latest_completed(self, target: str) -> BackupRecord | None:
        return next((r for r in self.iter_backups(target) if r.status == "completed"), None)
