"""Database credentials: a Secrets Manager secret in RDS's shape, or a plain DSN.

Secrets are read through Powertools Parameters (cached for the life of the process).
A DSN is never logged; `redact` gives the form that may appear in messages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.parameters import SecretsProvider
from aws_lambda_powertools.utilities.parameters.exceptions import GetParameterError, TransformParameterError

from drsentry.adapters.tls import with_tls
from drsentry.core.errors import CredentialsError

if TYPE_CHECKING:
    from drsentry.adapters.aws import AwsClients
    from drsentry.core.config import TargetConfig

SECRET_CACHE_SECONDS = 300
_REQUIRED = ("host", "username", "password")


# psycopg (and libpq with it) is imported when a DSN is first handled: the functions that
# never connect to PostgreSQL (archive, notify, replication-check) never load it, which
# keeps about 40 ms out of their cold start.
def conninfo_to_dict(dsn: str) -> dict[str, Any]:
    """psycopg's DSN parser; psycopg.ProgrammingError for a malformed DSN."""
    from psycopg.conninfo import conninfo_to_dict as parse

    return parse(dsn)


def make_conninfo(dsn: str = "", **parts: Any) -> str:
    from psycopg.conninfo import make_conninfo as make

    return make(dsn, **parts)


def _malformed_dsn() -> type[Exception]:
    from psycopg import ProgrammingError

    return ProgrammingError


def dsn_from_secret(secret: dict[str, Any], secret_name: str) -> str:
    missing = [field for field in _REQUIRED if not secret.get(field)]
    if missing:
        raise CredentialsError(f"secret {secret_name!r} lacks field(s): {', '.join(missing)}")
    # sslmode and sslrootcert only when the secret names them (RDS's own secrets never do):
    # Credentials.dsn then applies the TLS rule of adapters.tls (verify-full by default).
    tls = {field: str(secret[field]) for field in ("sslmode", "sslrootcert") if secret.get(field)}
    return make_conninfo(
        host=str(secret["host"]),
        port=str(secret.get("port") or 5432),
        user=str(secret["username"]),
        password=str(secret["password"]),
        dbname=str(secret.get("dbname") or "postgres"),
        **tls,
    )


class Credentials:
    def __init__(self, clients: AwsClients) -> None:
        self._provider = SecretsProvider(boto3_client=clients.secretsmanager)

    def secret_json(self, secret_name: str) -> dict[str, Any]:
        try:
            value = self._provider.get(secret_name, max_age=SECRET_CACHE_SECONDS, transform="json")
        except TransformParameterError as exc:
            raise CredentialsError(f"secret {secret_name!r} is not a JSON object") from exc
        except GetParameterError as exc:
            raise CredentialsError(f"cannot read secret {secret_name!r}: {_reason(exc)}") from exc
        if not isinstance(value, dict):
            raise CredentialsError(f"secret {secret_name!r} is not a JSON object")
        return value

    def secret_text(self, secret_name: str) -> str:
        try:
            value = self._provider.get(secret_name, max_age=SECRET_CACHE_SECONDS)
        except GetParameterError as exc:
            raise CredentialsError(f"cannot read secret {secret_name!r}: {_reason(exc)}") from exc
        return str(value)

    def raw_dsn(self, *, dsn: str | None, secret_name: str | None) -> str:
        """The DSN as written (in the configuration or the secret), before the TLS rule."""
        if dsn:
            return dsn
        if not secret_name:
            raise CredentialsError("neither a DSN nor a DSN secret is configured")
        return dsn_from_secret(self.secret_json(secret_name), secret_name)

    def dsn(
        self,
        *,
        dsn: str | None,
        secret_name: str | None,
        sslmode: str | None = None,
        sslrootcert: str | None = None,
    ) -> str:
        """The DSN to connect with: TLS verify-full unless the connection, the configuration
        or a server on this machine says otherwise (adapters.tls)."""
        written = self.raw_dsn(dsn=dsn, secret_name=secret_name)
        try:
            return with_tls(written, sslmode=sslmode, sslrootcert=sslrootcert)
        except _malformed_dsn():
            # Left as written: each caller reports a malformed DSN in its own words, never echoing it.
            return written

    def target_dsn(self, target: TargetConfig) -> str:
        """The source database of a target, with the target's TLS settings."""
        return self.dsn(
            dsn=target.dsn,
            secret_name=target.dsn_secret,
            sslmode=target.sslmode,
            sslrootcert=target.sslrootcert,
        )


def _reason(exc: Exception) -> str:
    text = str(exc)
    for code in ("ResourceNotFoundException", "AccessDeniedException", "DecryptionFailure"):
        if code in text:
            return code
    return text.splitlines()[0][:200] if text else type(exc).__name__


def redact(dsn: str) -> str:
    """host:port/dbname as user, without the password: safe for logs and messages."""
    try:
        parts = conninfo_to_dict(dsn)
    except _malformed_dsn():  # a malformed DSN: never echo it, it may hold a password
        return "<unparseable DSN>"
    host = parts.get("host") or "localhost"
    return f"{parts.get('user') or '?'}@{host}:{parts.get('port') or 5432}/{parts.get('dbname') or '?'}"


def same_database(dsn_a: str, dsn_b: str) -> bool:
    """True when two DSNs name the same server and database."""
    a, b = conninfo_to_dict(dsn_a), conninfo_to_dict(dsn_b)

    def where(parts: dict[str, Any]) -> tuple[str, str, str]:
        host = str(parts.get("host") or "localhost").lower()
        host = "127.0.0.1" if host in {"localhost", "::1"} else host
        return host, str(parts.get("port") or 5432), str(parts.get("dbname") or parts.get("user") or "")

    return where(a) == where(b)


def sanitize(text: str, *dsns: str) -> str:
    """Remove any password the DSNs hold from text that will be logged or recorded."""
    for dsn in dsns:
        try:
            password = conninfo_to_dict(dsn).get("password")
        except _malformed_dsn():  # a malformed DSN has nothing to redact
            continue
        if password:
            text = text.replace(str(password), "***")
    return text
