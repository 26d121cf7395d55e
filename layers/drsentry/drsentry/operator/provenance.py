"""What an auditor asks of an operator's run (a drill above all): which database, which drsentry,
who ran it, with which settings. Nothing here may carry a secret: a database is named by host,
port and name, a configuration by its digest.

Who ran it is the OS account and host. The AWS caller identity would say more, but it costs an
STS call and an STS client the adapters do not build today; the account is what a change
ticket names anyway.
"""

from __future__ import annotations

import getpass
import hashlib
import socket
from importlib import metadata
from pathlib import Path

import drsentry
from drsentry.adapters.secrets import redact
from drsentry.core.config import Config, dump_config


def drsentry_version() -> str:
    """The installed package's version; the source tree's where the package has no metadata
    (the Lambda layer ships the modules alone)."""
    try:
        return metadata.version("drsentry")
    except metadata.PackageNotFoundError:
        return drsentry.__version__


def database_location(dsn: str) -> str:
    """`host:port/dbname`: where the data lives, without the user or the password."""
    return redact(dsn).rpartition("@")[2]


def operator_identity() -> str:
    """`alice on ops-laptop`: the OS account that ran the command, and where."""
    try:
        user = getpass.getuser()
    except OSError:  # no login name and no USER/LOGNAME (a bare container): say so, do not guess
        user = "an unnamed user"
    return f"{user} on {socket.gethostname()}"


def config_digest(config: Config, path: Path | None = None) -> str:
    """`sha256:<hex> of drsentry.yaml`: what `sha256sum` gives for the file, so an auditor can match
    the report to the configuration in version control. Without a file (the configuration came
    from SSM), the digest of its canonical form, which any copy with the same settings shares."""
    if path is not None:
        try:
            return f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()} of {path.name}"
        except OSError:  # moved since it was read: the settings that ran are still known
            pass
    canonical = dump_config(config).encode()
    return f"sha256:{hashlib.sha256(canonical).hexdigest()} of the canonical configuration"
