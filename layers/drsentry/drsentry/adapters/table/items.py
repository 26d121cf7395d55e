"""Items of the catalog table: the codec between records and DynamoDB's attribute values,
and `Table`, the one client and name every repository on the table shares.

Every DynamoDB error becomes a `CatalogError` here, worded once:
``catalog table 'NAME': ACTION failed: Code: Message``. Repositories only decide what a
conditional-check failure means for them (a lock held, a record that does not exist).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

from drsentry.adapters.aws_errors import AWS_ERRORS, describe
from drsentry.core.errors import CatalogError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def to_item(fields: dict[str, Any]) -> dict[str, Any]:
    """Plain fields as a DynamoDB item; None values are left out (absent, not NULL)."""
    # DynamoDB numbers must be Decimal; a JSON round trip turns floats into them.
    plain = json.loads(json.dumps(fields), parse_float=Decimal)
    return {name: _serializer.serialize(value) for name, value in plain.items() if value is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    """A DynamoDB item as plain fields: whole numbers as int, others as float, sets as lists."""

    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return int(value) if value == value.to_integral_value() else float(value)
        if isinstance(value, dict):
            return {key: plain(inner) for key, inner in value.items()}
        if isinstance(value, list | set):
            return [plain(inner) for inner in value]
        return value

    return {name: plain(_deserializer.deserialize(value)) for name, value in item.items()}


class Table:
    """The catalog table as the repositories use it: one client, one name, one error wording."""

    def __init__(self, client: DynamoDBClient, name: str) -> None:
        self.client = client
        self.name = name

    def error(self, action: str, exc: BaseException) -> CatalogError:
        return CatalogError(f"catalog table {self.name!r}: {action} failed: {describe(exc)}")

    def put(self, fields: dict[str, Any], action: str) -> None:
        """Write one item (replacing any with its key)."""
        try:
            self.client.put_item(TableName=self.name, Item=to_item(fields))
        except AWS_ERRORS as exc:
            raise self.error(action, exc) from exc

    def query(self, action: str, **request: Any) -> Iterator[dict[str, Any]]:
        """The items a query finds, decoded, page by page: a reader that stops early reads no more."""
        pages = self.client.get_paginator("query").paginate(TableName=self.name, **request)
        try:
            for page in pages:
                for item in page.get("Items", []):
                    yield from_item(item)
        except AWS_ERRORS as exc:
            raise self.error(action, exc) from exc
