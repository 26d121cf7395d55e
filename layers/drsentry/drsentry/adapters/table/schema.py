"""The catalog table itself: its definition (shared by the local stack, the tests and
template.yaml, which a unit test compares), its creation, and what readiness asks of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from drsentry.adapters.aws_errors import AWS_ERRORS, error_code, is_not_found
from drsentry.adapters.table.items import Table
from drsentry.adapters.table.keys import BACKUP_ID, BACKUP_ID_INDEX, PK, SK, TTL_ATTRIBUTE

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# TTL being switched on still deletes expired items once it is done.
_TTL_ON = frozenset({"ENABLED", "ENABLING"})


def table_definition(table_name: str) -> dict[str, Any]:
    """The catalog's shape, shared by the local stack, the tests and template.yaml."""
    return {
        "TableName": table_name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": PK, "AttributeType": "S"},
            {"AttributeName": SK, "AttributeType": "S"},
            {"AttributeName": BACKUP_ID, "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": PK, "KeyType": "HASH"},
            {"AttributeName": SK, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": BACKUP_ID_INDEX,
                "KeySchema": [{"AttributeName": BACKUP_ID, "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    }


def create_table(client: DynamoDBClient, table_name: str) -> None:
    """Create the catalog table with TTL on; an existing table is left as it is."""
    table = Table(client, table_name)
    try:
        client.create_table(**table_definition(table_name))
    except AWS_ERRORS as exc:
        if error_code(exc) == "ResourceInUseException":
            return
        raise table.error("creating the table", exc) from exc
    try:
        client.get_waiter("table_exists").wait(TableName=table_name)
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except AWS_ERRORS as exc:
        raise table.error("turning TTL on", exc) from exc


@dataclass(frozen=True)
class TableDescription:
    """What `drsentry check` needs to know of the deployed table."""

    name: str
    status: str  # ACTIVE, CREATING, UPDATING, ...
    has_backup_id_index: bool
    ttl_status: str  # ENABLED, ENABLING, DISABLED, DISABLING
    ttl_attribute: str | None

    @property
    def ttl_on(self) -> bool:
        return self.ttl_status in _TTL_ON

    @property
    def ttl_on_expiry_attribute(self) -> bool:
        """TTL on, and on the attribute drsentry writes: expired records really go."""
        return self.ttl_on and self.ttl_attribute == TTL_ATTRIBUTE


def describe_table(table: Table) -> TableDescription | None:
    """The table's status, index and TTL; None when the table does not exist."""
    try:
        found = table.client.describe_table(TableName=table.name)["Table"]
    except AWS_ERRORS as exc:
        if is_not_found(exc):
            return None
        raise table.error("describing the table", exc) from exc
    try:
        ttl = table.client.describe_time_to_live(TableName=table.name).get("TimeToLiveDescription", {})
    except AWS_ERRORS as exc:
        raise table.error("reading its TTL setting", exc) from exc
    indexes = {index["IndexName"] for index in found.get("GlobalSecondaryIndexes", [])}
    return TableDescription(
        name=table.name,
        status=found.get("TableStatus", "?"),
        has_backup_id_index=BACKUP_ID_INDEX in indexes,
        ttl_status=ttl.get("TimeToLiveStatus", "DISABLED"),
        ttl_attribute=ttl.get("AttributeName"),
    )
