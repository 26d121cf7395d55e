"""Create what a configuration names on an AWS endpoint: the local stack's (and the
integration tests') stand-in for `sam deploy`. Safe to run twice."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from drsentry.adapters.table import create_table
from drsentry.core.config import Config

if TYPE_CHECKING:
    from drsentry.adapters.aws import AwsClients

_ALREADY_THERE = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists", "ResourceExistsException"}


def _create_bucket(clients: AwsClients, bucket: str, region: str, *, object_lock: bool = False) -> None:
    s3 = clients.s3(region)
    request: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": region}
    if object_lock:
        request["ObjectLockEnabledForBucket"] = True
    try:
        s3.create_bucket(**request)
    except ClientError as exc:
        if exc.response["Error"]["Code"] not in _ALREADY_THERE:
            raise
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})


def provision(config: Config, clients: AwsClients, secret_values: dict[str, dict[str, Any] | str]) -> None:
    storage = config.storage
    # Every backup is locked until its retention ends, in the primary bucket and the replica.
    _create_bucket(clients, storage.bucket, storage.region, object_lock=True)
    if storage.replica:
        _create_bucket(clients, storage.replica.bucket, storage.replica.region, object_lock=True)
    if storage.archive:
        _create_bucket(clients, storage.archive.bucket, storage.region, object_lock=True)
    create_table(clients.dynamodb, config.catalog.table)
    if config.notifications.sns_topic_arn:
        clients.sns.create_topic(Name=config.notifications.sns_topic_arn.rsplit(":", 1)[-1])
    for name, value in secret_values.items():
        secret_string = value if isinstance(value, str) else json.dumps(value)
        try:
            clients.secretsmanager.create_secret(Name=name, SecretString=secret_string)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in _ALREADY_THERE:
                raise
            clients.secretsmanager.put_secret_value(SecretId=name, SecretString=secret_string)


def rds_secret(
    dsn_host: str, port: int, username: str, password: str, dbname: str, *, sslmode: str | None = None
) -> dict[str, Any]:
    """A secret in the shape RDS writes for a managed database user (drsentry reads an
    optional `sslmode`; without it connections require TLS)."""
    secret: dict[str, Any] = {
        "engine": "postgres",
        "host": dsn_host,
        "port": port,
        "username": username,
        "password": password,
        "dbname": dbname,
    }
    if sslmode:
        secret["sslmode"] = sslmode
    return secret
