"""The DynamoDB catalog: backup records, per-target run locks, and (shared with
Powertools Idempotency) the idempotency records, in one single-table design.

Keys:  pk = ``target#{name}``, sk = ``backup#{backup_id}`` for backups;
       pk = ``lock#{name}``,   sk = ``lock`` for run locks;
       pk = ``idempotency#drsentry``, sk = hash for Powertools Idempotency.
The ``backup_id-index`` GSI finds a backup by id alone (``drsentry restore ID``).
``expires_at`` (epoch seconds) is the table's TTL attribute.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from drsentry.core.errors import BackupInProgress, BackupNotFound, CatalogError
from drsentry.core.records import BackupRecord, check_backup_id

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BACKUP_ID_INDEX = "backup_id-index"
TTL_ATTRIBUTE = "expires_at"
IDEMPOTENCY_PK = "idempotency#drsentry"

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(fields: dict[str, Any]) -> dict[str, Any]:
    # DynamoDB numbers must be Decimal; a JSON round trip turns floats into them.
    plain = json.loads(json.dumps(fields), parse_float=Decimal)
    return {name: _serializer.serialize(value) for name, value in plain.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, dict):
            return {key: plain(inner) for key, inner in value.items()}
        if isinstance(value, list | set):
            return [plain(inner) for inner in value]
        return value

    return {name: plain(_deserializer.deserialize(value)) for name, value in item.items()}


def table_definition(table_name: str) -> dict[str, Any]:
    """The catalog's shape, shared by the local stack, the tests and template.yaml."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": "backup_id", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": BACKUP_ID_INDEX,
                "KeySchema": [{"AttributeName": "backup_id", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


def create_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the catalog table with TTL on; an existing table is left as it is."""
    try:
        client.create_table(**table_definition(table_name))
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceInUseException":
            raise
        return
    client.get_waiter("table_exists").wait(TableName=table_name)
    client.update_time_to_live(
        TableName=table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )


class Catalog:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self.client = client
        self.table_name = table_name

    def _fail(self, action: str, exc: ClientError | BotoCoreError) -> CatalogError:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            reason = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
        else:  # the endpoint unreachable, a connection dropped: no HTTP answer at all
            reason = str(exc)
        return CatalogError(f"catalog table {self.table_name!r}: {action} failed: {reason}")

    # backups -----------------------------------------------------------------

    def put_backup(self, record: BackupRecord) -> None:
        fields = record.model_dump()
        fields.update(pk=f"target#{record.target}", sk=f"backup#{record.backup_id}", kind="backup")
        try:
            self.client.put_item(TableName=self.table_name, Item=to_item(fields))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"writing backup record {record.backup_id}", exc) from exc

    def update_backup(self, target: str, backup_id: str, fields: dict[str, Any]) -> None:
        """Set some fields of an existing backup record (replica state, archive, expiry)."""
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
            "Key": {"pk": {"S": f"target#{target}"}, "sk": {"S": f"backup#{backup_id}"}},
            "UpdateExpression": expression.strip(),
            "ExpressionAttributeNames": names,
            "ConditionExpression": "attribute_exists(pk)",
        }
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self.client.update_item(**request)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise BackupNotFound(f"backup {backup_id} of target {target!r} not found") from exc
            raise self._fail(f"updating backup record {backup_id}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"updating backup record {backup_id}", exc) from exc

    def get_backup(self, backup_id: str) -> BackupRecord:
        check_backup_id(backup_id)
        # Verification records carry the backup_id too, so the index holds them as well;
        # a much-verified backup can spill over several pages.
        pages = self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            IndexName=BACKUP_ID_INDEX,
            KeyConditionExpression="backup_id = :id",
            FilterExpression="#kind = :backup",
            ExpressionAttributeNames={"#kind": "kind"},
            ExpressionAttributeValues={":id": {"S": backup_id}, ":backup": {"S": "backup"}},
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    return BackupRecord.model_validate(from_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"looking up backup {backup_id}", exc) from exc
        raise BackupNotFound(f"backup {backup_id} not found in catalog {self.table_name!r}")

    def iter_backups(self, target: str) -> Iterator[BackupRecord]:
        """Every backup record of a target, newest first, page by page."""
        paginator = self.client.get_paginator("query")
        pages = paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :prefix)",
            ExpressionAttributeValues={":pk": {"S": f"target#{target}"}, ":prefix": {"S": "backup#"}},
            ScanIndexForward=False,
        )
        try:
            for page in pages:
                for item in page.get("Items", []):
                    yield BackupRecord.model_validate(from_item(item))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(f"listing backups of {target}", exc) from exc

    def list_backups(self, target: str, limit: int | None = None) -> list[BackupRecord]:
        backups: list[BackupRecord] = []
        for record in self.iter_backups(target):
            backups.append(record)
            if limit is not None and len(backups) >= limit:
                break
        return backups

    def latest_completed(self, target: str) -> BackupRecord | None:
        return next((r for r in self.iter_backups(target) if r.status == "completed"), None)

    # run locks ---------------------------------------------------------------

    def acquire_lock(self, target: str, owner: str, ttl_seconds: int) -> None:
        """Conditional write: at most one run per target; a crashed run's lock expires."""
        now = int(time.time())
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_item(
                    {"pk": f"lock#{target}", "sk": "lock", "owner": owner, TTL_ATTRIBUTE: now + ttl_seconds}
                ),
                ConditionExpression="attribute_not_exists(pk) OR #expires < :now",
                ExpressionAttributeNames={"#expires": TTL_ATTRIBUTE},
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConditionalCheckFailedException":
                raise BackupInProgress(
                    f"another backup of target {target!r} is running (lock held); not starting a second one"
                ) from exc
            raise self._fail(f"taking the lock of {target}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"taking the lock of {target}", exc) from exc

    def release_lock(self, target: str, owner: str) -> None:
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key={"pk": {"S": f"lock#{target}"}, "sk": {"S": "lock"}},
                ConditionExpression="#owner = :owner",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": {"S": owner}},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConditionalCheckFailedException":
                raise self._fail(f"releasing the lock of {target}", exc) from exc
        except BotoCoreError as exc:
            raise self._fail(f"releasing the lock of {target}", exc) from exc
