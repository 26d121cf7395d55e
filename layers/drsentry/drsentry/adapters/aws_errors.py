"""What an AWS error means, decided and worded in one place.

botocore raises two families: ``ClientError`` when AWS answered with an error (its code
says what: not found, access denied, throttled, a precondition) and ``BotoCoreError``
when there was no answer to read (no credentials, the endpoint unreachable, a
connection cut mid-body). Adapters catch ``AWS_ERRORS``, ask this module what the error
means, and raise a domain exception whose message is `describe(exc)`; nothing outside
the adapters imports botocore.
"""

from __future__ import annotations

from typing import Final

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

# Catch these in adapters, and only there.
AWS_ERRORS: Final = (ClientError, BotoCoreError)
AwsError = ClientError | BotoCoreError

# S3 answers a HEAD of a missing object with a bare 404; the other services name it.
NOT_FOUND_CODES: Final = frozenset(
    {
        "404",
        "NotFound",
        "NoSuchKey",
        "NoSuchVersion",
        "NoSuchBucket",
        "NoSuchUpload",
        "NoSuchTagSet",
        "ResourceNotFoundException",
        "ParameterNotFound",
        "ObjectLockConfigurationNotFoundError",
        "ReplicationConfigurationNotFoundError",
        "NotFoundException",
    }
)
ACCESS_DENIED_CODES: Final = frozenset(
    {
        "403",
        "AccessDenied",
        "AccessDeniedException",
        "Forbidden",
        "AuthorizationError",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "ExpiredTokenException",
        "KMS.AccessDeniedException",
    }
)
THROTTLED_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "SlowDown",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "RequestThrottled",
        "RequestThrottledException",
    }
)
_UNREACHABLE: Final = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)
_NO_CREDENTIALS: Final = (NoCredentialsError, PartialCredentialsError)


def is_aws_error(exc: BaseException) -> bool:
    return isinstance(exc, AWS_ERRORS)


def error_code(exc: BaseException) -> str:
    """The error code AWS answered with; "" when there was no answer (or not an AWS error)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def is_access_denied(exc: BaseException) -> bool:
    return error_code(exc) in ACCESS_DENIED_CODES


def is_throttled(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLED_CODES


def is_no_credentials(exc: BaseException) -> bool:
    return isinstance(exc, _NO_CREDENTIALS)


def is_unreachable(exc: BaseException) -> bool:
    """No answer: the endpoint is down, refused the connection or went silent."""
    return isinstance(exc, _UNREACHABLE)


def describe(exc: BaseException) -> str:
    """One line: ``Code: Message`` for an AWS answer, botocore's own words otherwise."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    else:
        text = str(exc) or type(exc).__name__
    return text.splitlines()[0] if text else type(exc).__name__
