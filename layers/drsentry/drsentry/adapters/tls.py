"""TLS to PostgreSQL: which `sslmode` and CA bundle a target's connections use.

The rule (README, "TLS to the database"), first match wins:

1. An `sslmode` written in the connection itself (a DSN's ``sslmode=...``, the secret's
   ``sslmode`` field) is kept: whoever wrote the credentials chose it for that server.
2. The target's `sslmode` in drsentry.yaml (`verify-full`, `verify-ca` or `require`).
3. `verify-full`: the server's certificate must chain to a trusted CA and name the host.
   A server on this machine (a loopback address, ``localhost``, a Unix socket) is the
   exception: nothing is added there, because TLS to oneself protects nothing and the
   embedded servers of the local stack and the tests have no certificate.

With `verify-ca` or `verify-full` and no ``sslrootcert`` in the connection, the CA bundle is
the target's `sslrootcert`, else the RDS bundle (every RDS and Aurora CA) that the pgtools
layer and the task image ship at `RDS_CA_BUNDLE`. Without either, libpq looks for
``~/.postgresql/root.crt`` and says so in one line when it is missing.

The settings travel inside the DSN, so psycopg, pg_dump and pg_restore all get them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RDS_CA_BUNDLE = Path("/opt/pgtools/certs/rds-global-bundle.pem")
DEFAULT_SSLMODE = "verify-full"
VERIFYING_MODES = frozenset({"verify-ca", "verify-full"})
LOCAL_HOST_NAMES = frozenset({"", "localhost"})


def is_local_host(host: str | None) -> bool:
    """True when every host libpq would try is this machine: loopback, localhost, a socket."""
    for listed in str(host or "").split(","):
        name = listed.strip()
        if name.startswith(("/", "@")) or name.lower() in LOCAL_HOST_NAMES:
            continue
        try:
            if ipaddress.ip_address(name).is_loopback:
                continue
        except ValueError:
            pass
        return False
    return True


@dataclass(frozen=True)
class TlsChoice:
    """What a connection ends up with, and who decided it (for `drsentry check`)."""

    sslmode: str | None
    sslrootcert: str | None
    decided_by: str  # "connection", "configuration", "default" or "local server"

    @property
    def verifies_server(self) -> bool:
        return self.sslmode in VERIFYING_MODES


def choose_tls(
    parts: dict[str, Any],
    *,
    sslmode: str | None = None,
    sslrootcert: str | None = None,
    bundle: Path = RDS_CA_BUNDLE,
) -> TlsChoice:
    if parts.get("sslmode"):
        mode, decided_by = str(parts["sslmode"]), "connection"
    elif sslmode:
        mode, decided_by = sslmode, "configuration"
    elif is_local_host(parts.get("host") or parts.get("hostaddr")):
        return TlsChoice(None, parts.get("sslrootcert"), "local server")
    else:
        mode, decided_by = DEFAULT_SSLMODE, "default"
    root = parts.get("sslrootcert") or None
    if mode in VERIFYING_MODES and not root:
        root = sslrootcert or (str(bundle) if bundle.is_file() else None)
    return TlsChoice(mode, root, decided_by)


def with_tls(
    dsn: str, *, sslmode: str | None = None, sslrootcert: str | None = None, bundle: Path = RDS_CA_BUNDLE
) -> str:
    """The DSN with the sslmode and sslrootcert the rule above gives it."""
    # psycopg is imported on first use, as in adapters.secrets (cold start of the functions
    # that never connect to PostgreSQL).
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    parts = conninfo_to_dict(dsn)
    choice = choose_tls(parts, sslmode=sslmode, sslrootcert=sslrootcert, bundle=bundle)
    added = {"sslmode": choice.sslmode, "sslrootcert": choice.sslrootcert}
    added = {key: value for key, value in added.items() if value and not parts.get(key)}
    if not added:
        return dsn  # nothing to add: the DSN stays exactly as written
    return make_conninfo(**{key: str(value) for key, value in {**parts, **added}.items()})
