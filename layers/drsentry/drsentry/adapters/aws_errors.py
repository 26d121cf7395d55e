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
# Bucket-level requests name a missing bucket (a HEAD has no body to name it and says 404).
BUCKET_NOT_FOUND_CODES: Final = frozenset({"NoSuchBucket"})
# A GET of an object in GLACIER or DEEP_ARCHIVE that is not restored (or whose restored copy expired).
ARCHIVED_CODES: Final = frozenset({"InvalidObjectState"})
RESTORE_IN_PROGRESS_CODES: Final = frozenset({"RestoreAlreadyInProgress"})
# S3 refuses to delete a version under Object Lock retention or a legal hold with AccessDenied, the
# same answer a role without s3:DeleteObjectVersion gets; DeleteObjects reports it per key.
DELETE_REFUSED_CODES: Final = frozenset({"AccessDenied"})
# A HEAD of a version that is a delete marker: there is no object to describe.
DELETE_MARKER_CODES: Final = frozenset({"405", "MethodNotAllowed"})
_UNREACHABLE: Final = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)
_NO_CREDENTIALS: Final = (NoCredentialsError, PartialCredentialsError)


def is_aws_error(exc: BaseException) -> bool:
    return isinstance(exc, AWS_ERRORS)


def aws_cause(exc: BaseException) -> BaseException | None:
    """The AWS error behind `exc`: itself, or one it was raised from or while handling (domain
    errors and Powertools wrap them, sometimes twice); None when there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if is_aws_error(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


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


def is_no_such_bucket(exc: BaseException) -> bool:
    return error_code(exc) in BUCKET_NOT_FOUND_CODES


def is_archived(exc: BaseException) -> bool:
    """A read refused because the object waits in an archive storage class."""
    return error_code(exc) in ARCHIVED_CODES


def is_restore_in_progress(exc: BaseException) -> bool:
    return error_code(exc) in RESTORE_IN_PROGRESS_CODES


def is_delete_refused(exc: BaseException) -> bool:
    return error_code(exc) in DELETE_REFUSED_CODES


def is_delete_marker(exc: BaseException) -> bool:
    return error_code(exc) in DELETE_MARKER_CODES


def is_no_credentials(exc: BaseException) -> bool:
    return isinstance(exc, _NO_CREDENTIALS)


def is_unreachable(exc: BaseException) -> bool:
    """No answer: the endpoint is down, refused the connection or went silent."""
    return isinstance(exc, _UNREACHABLE)


def operation(exc: BaseException) -> str:
    """The AWS operation that failed (``PutObject``), or ``request`` when there was no answer."""
    if isinstance(exc, ClientError):
        return str(exc.operation_name or "request")
    return "request"


def describe(exc: BaseException) -> str:
    """One line: ``Code: Message`` for an AWS answer, the error's own words otherwise."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        text = f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    else:
        text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
