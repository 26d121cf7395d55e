"""Powertools Idempotency's records, kept in one partition of the catalog table."""

from __future__ import annotations

from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from drsentry.adapters.table.items import Table
from drsentry.adapters.table.keys import IDEMPOTENCY_PK, PK, SK, TTL_ATTRIBUTE


def idempotency_persistence(table: Table) -> DynamoDBPersistenceLayer:
    """Powertools' persistence layer on the catalog table: static partition, the table's TTL."""
    return DynamoDBPersistenceLayer(
        table_name=table.name,
        key_attr=PK,
        sort_key_attr=SK,
        static_pk_value=IDEMPOTENCY_PK,
        expiry_attr=TTL_ATTRIBUTE,
        boto3_client=table.client,
    )
