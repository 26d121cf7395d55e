"""TLS to the database against a real server: libpq checks the certificate chain and the host
name (verify-full) with the CA bundle drsentry names, and a wrong CA is one clear line.

The embedded server is built without OpenSSL, so a TLS front (tls_proxy.py) terminates TLS
with a certificate from a throwaway CA and relays to it. The DSN names the host `db.example`
and connects to 127.0.0.1 (libpq's hostaddr): the certificate is checked against
`db.example`, as it would be against an RDS endpoint, and the host is not a local one, so
drsentry's default (verify-full) applies.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tls_proxy import TlsProxy

from drsentry.adapters import postgres
from drsentry.adapters.secrets import Credentials, conninfo_to_dict
from drsentry.core.config import TargetConfig
from drsentry.core.errors import PostgresUnreachable
from tls_certs import make_ca

pytestmark = pytest.mark.integration

SERVER_NAME = "db.example"


@pytest.fixture(scope="module")
def tls_front(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsProxy, Path]]:
    """A TLS front for the session's server; the CA file that signed its certificate."""
    directory = tmp_path_factory.mktemp("tls")
    authority = make_ca("drsentry test CA")
    certificate, key = authority.issue_server_certificate(directory, [SERVER_NAME])
    with TlsProxy(pg_server.port, certificate, key) as proxy:
        yield proxy, authority.write(directory / "ca.pem")


def remote_dsn(pg_server: Any, port: int) -> str:
    """The server as if it were remote: no sslmode written, host name db.example."""
    return (
        f"host={SERVER_NAME} hostaddr=127.0.0.1 port={port} user=postgres "
        f"password={pg_server.password} dbname=postgres"
    )


def test_verify_full_with_the_right_ca_connects(
    clients: Any, pg_server: Any, tls_front: tuple[TlsProxy, Path]
) -> None:
    # Given a target whose DSN names no sslmode, and the CA that signed the server's certificate
    proxy, ca_file = tls_front
    target = TargetConfig(name="app", dsn=remote_dsn(pg_server, proxy.port), sslrootcert=str(ca_file))

    # When drsentry resolves the target's DSN and connects
    dsn = Credentials(clients).target_dsn(target)
    with postgres.connect(dsn, application_name="drsentry-tls-test") as session:
        database, version = session.database_and_version()

    # Then libpq checked the certificate (verify-full with that CA) and the session works
    assert conninfo_to_dict(dsn)["sslmode"] == "verify-full"
    assert conninfo_to_dict(dsn)["sslrootcert"] == str(ca_file)
    assert database == "postgres" and version
    assert proxy.handshake_errors == []


def test_a_server_certificate_from_another_ca_is_refused_in_one_line(
    clients: Any, pg_server: Any, tls_front: tuple[TlsProxy, Path], tmp_path: Path
) -> None:
    # Given a CA bundle that did not sign the server's certificate (a server impersonated)
    proxy, _ = tls_front
    wrong_ca = make_ca("someone else's CA").write(tmp_path / "other-ca.pem")
    target = TargetConfig(name="app", dsn=remote_dsn(pg_server, proxy.port), sslrootcert=str(wrong_ca))

    # When drsentry connects
    dsn = Credentials(clients).target_dsn(target)
    with pytest.raises(PostgresUnreachable) as raised:
        postgres.connect(dsn, application_name="drsentry-tls-test", connect_timeout=5)

    # Then nothing was sent to the server: one line names the server and the certificate problem
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"postgres@{SERVER_NAME}:{proxy.port}/postgres: ")
    assert "certificate verify failed" in message
    assert pg_server.password not in message


def test_a_certificate_for_another_host_name_is_refused(
    clients: Any, pg_server: Any, tls_front: tuple[TlsProxy, Path]
) -> None:
    # Given the right CA, but a DSN naming a host the certificate was not issued for
    proxy, ca_file = tls_front
    dsn_text = remote_dsn(pg_server, proxy.port).replace(f"host={SERVER_NAME}", "host=impostor.example")
    target = TargetConfig(name="app", dsn=dsn_text, sslrootcert=str(ca_file))

    # When drsentry connects
    dsn = Credentials(clients).target_dsn(target)
    with pytest.raises(PostgresUnreachable) as raised:
        postgres.connect(dsn, application_name="drsentry-tls-test", connect_timeout=5)

    # Then verify-full refuses it: the certificate does not name impostor.example
    assert "impostor.example" in str(raised.value)
    assert "does not match host name" in str(raised.value)


def test_require_in_the_config_encrypts_without_checking_the_certificate(
    clients: Any, pg_server: Any, tls_front: tuple[TlsProxy, Path], tmp_path: Path
) -> None:
    # Given a target that says sslmode: require (and no CA at all)
    proxy, _ = tls_front
    target = TargetConfig(name="app", dsn=remote_dsn(pg_server, proxy.port), sslmode="require")

    # When drsentry connects
    dsn = Credentials(clients).target_dsn(target)
    with postgres.connect(dsn, application_name="drsentry-tls-test") as session:
        session.database_and_version()

    # Then the connection is TLS (through the front, which takes TLS only) and unverified
    assert conninfo_to_dict(dsn)["sslmode"] == "require"
    assert "sslrootcert" not in conninfo_to_dict(dsn)
