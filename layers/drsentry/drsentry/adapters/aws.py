"""The one place boto3 clients are built.

boto3 itself honours ``AWS_ENDPOINT_URL`` (and the per-service variants), so the same
code talks to AWS in Lambda and to the local stack on a laptop. Retries use botocore's
standard mode; S3 uses path-style addressing when an endpoint override is present,
because a local endpoint on 127.0.0.1 has no virtual-host DNS.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config as BotoConfig

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_secretsmanager import SecretsManagerClient
    from mypy_boto3_sns import SNSClient
    from mypy_boto3_ssm import SSMClient
    from mypy_boto3_stepfunctions import SFNClient

MAX_ATTEMPTS = 5


def endpoint_override() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL")


class AwsClients:
    """Lazily built, thread-safe clients for one primary region.

    S3 clients are cached per region because the replica bucket lives elsewhere.
    """

    def __init__(
        self, region: str, session: boto3.session.Session | None = None, max_attempts: int = MAX_ATTEMPTS
    ) -> None:
        self.region = region
        self.max_attempts = max_attempts
        self._session = session or boto3.session.Session()
        self._s3_by_region: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _config(self, **extra: Any) -> BotoConfig:
        return BotoConfig(
            region_name=self.region,
            retries={"mode": "standard", "max_attempts": self.max_attempts},
            max_pool_connections=32,
            **extra,
        )

    def s3(self, region: str | None = None) -> S3Client:
        region = region or self.region
        with self._lock:
            if region not in self._s3_by_region:
                s3_options = {"addressing_style": "path"} if endpoint_override() else {}
                config = self._config(s3=s3_options).merge(BotoConfig(region_name=region))
                self._s3_by_region[region] = self._session.client("s3", config=config)
            client: S3Client = self._s3_by_region[region]
            return client

    @cached_property
    def dynamodb(self) -> DynamoDBClient:
        return self._session.client("dynamodb", config=self._config())

    @cached_property
    def sns(self) -> SNSClient:
        return self._session.client("sns", config=self._config())

    @cached_property
    def secretsmanager(self) -> SecretsManagerClient:
        return self._session.client("secretsmanager", config=self._config())

    @cached_property
    def ssm(self) -> SSMClient:
        return self._session.client("ssm", config=self._config())

    @cached_property
    def stepfunctions(self) -> SFNClient:
        return self._session.client("stepfunctions", config=self._config())

    def client(self, service: str) -> Any:
        """Any other service (sqs, cloudwatch, ...) with the same retry settings."""
        return self._session.client(service, config=self._config())  # type: ignore[call-overload]
