"""The TLS rule of adapters/tls.py: verify-full with the RDS CA bundle by default, what the
connection or the configuration says otherwise, nothing added for a server on this machine;
what pg_dump and pg_restore receive; what `drsentry check` says; the pgtools layer's guard."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict

from drsentry.adapters.pgtools import pg_environment
from drsentry.adapters.secrets import dsn_from_secret
from drsentry.adapters.tls import is_local_host, with_tls
from drsentry.core.config import ConfigError, TargetConfig, parse_config
from drsentry.operator.readiness import tls_check
from tls_certs import make_ca

ROOT = Path(__file__).resolve().parents[2]
RDS_SECRET = {
    "engine": "postgres",
    "host": "app.cluster-abc.eu-west-1.rds.amazonaws.com",
    "port": 5432,
    "username": "drsentry",
    "password": "s3cret-rds-pw",
    "dbname": "app",
}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    return make_ca("bundle").write(tmp_path / "rds-global-bundle.pem")


def test_an_rds_secret_gets_verify_full_with_the_shipped_bundle(bundle: Path) -> None:
    # Given the secret RDS writes (no sslmode), and the bundle the pgtools layer ships
    # When drsentry builds the DSN
    dsn = with_tls(dsn_from_secret(RDS_SECRET, "drsentry/app-db"), bundle=bundle)

    # Then the server's certificate is checked against the bundle, host name included
    parts = conninfo_to_dict(dsn)
    assert parts["sslmode"] == "verify-full"
    assert parts["sslrootcert"] == str(bundle)
    assert parts["host"] == RDS_SECRET["host"]


def test_pg_dump_and_pg_restore_receive_the_tls_settings_but_not_the_password(bundle: Path) -> None:
    # Given the DSN of an RDS secret
    dsn = with_tls(dsn_from_secret(RDS_SECRET, "drsentry/app-db"), bundle=bundle)

    # When the tools' connection string and environment are built
    conninfo, env = pg_environment(dsn, "drsentry-backup")

    # Then the connection string (pg_dump --dbname / pg_restore --dbname) carries TLS, the
    # environment carries the password
    parts = conninfo_to_dict(conninfo)
    assert (parts["sslmode"], parts["sslrootcert"]) == ("verify-full", str(bundle))
    assert "s3cret-rds-pw" not in conninfo
    assert env["PGPASSWORD"] == "s3cret-rds-pw"


def test_the_secret_or_the_dsn_may_choose_its_own_sslmode(bundle: Path) -> None:
    relaxed = with_tls(dsn_from_secret({**RDS_SECRET, "sslmode": "require"}, "s"), bundle=bundle)
    assert conninfo_to_dict(relaxed)["sslmode"] == "require"
    assert "sslrootcert" not in conninfo_to_dict(relaxed)  # nothing to verify with

    written = "host=db.example user=u dbname=d sslmode=verify-ca sslrootcert=/etc/ca.pem"
    assert conninfo_to_dict(with_tls(written, sslmode="require", bundle=bundle))["sslmode"] == "verify-ca"
    assert conninfo_to_dict(with_tls(written, sslrootcert="/other.pem", bundle=bundle))["sslrootcert"] == (
        "/etc/ca.pem"
    )


def test_the_configuration_sets_mode_and_ca_for_a_dsn_that_names_none(bundle: Path) -> None:
    dsn = "postgresql://u:p@db.example:5432/app"
    required = conninfo_to_dict(with_tls(dsn, sslmode="require", bundle=bundle))
    assert required["sslmode"] == "require" and "sslrootcert" not in required
    own_ca = conninfo_to_dict(with_tls(dsn, sslrootcert="/etc/corp-ca.pem", bundle=bundle))
    assert (own_ca["sslmode"], own_ca["sslrootcert"]) == ("verify-full", "/etc/corp-ca.pem")


def test_without_a_bundle_libpq_keeps_its_own_default_ca_file(tmp_path: Path) -> None:
    parts = conninfo_to_dict(with_tls("host=db.example user=u", bundle=tmp_path / "absent.pem"))
    assert parts["sslmode"] == "verify-full"
    assert "sslrootcert" not in parts  # libpq reads ~/.postgresql/root.crt, or says it is missing


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://postgres:pw@127.0.0.1:5432/app",
        "postgresql://postgres:pw@localhost/app",
        "host=::1 user=postgres",
        "host=/var/run/postgresql user=postgres",
        "user=postgres dbname=app",
        "host=127.0.0.1 user=postgres sslmode=disable",
    ],
)
def test_a_server_on_this_machine_keeps_its_dsn_as_written(dsn: str, bundle: Path) -> None:
    assert with_tls(dsn, bundle=bundle) == dsn


def test_only_loopback_addresses_sockets_and_localhost_are_local() -> None:
    assert is_local_host("127.0.0.2") and is_local_host("localhost,127.0.0.1") and is_local_host(None)
    assert not is_local_host("10.0.0.5")
    assert not is_local_host("localhost,db.example")
    assert not is_local_host("db.local")


def test_the_target_accepts_verifying_modes_and_require_only() -> None:
    assert TargetConfig(name="app", dsn="host=x", sslmode="require").sslmode == "require"
    base = "storage: {bucket: b-bucket, region: us-east-1}\ntargets:\n  - name: app\n    dsn: host=x\n"
    with pytest.raises(ConfigError, match=r"targets\[0\]\.sslmode"):
        parse_config(base + "    sslmode: disable\n", source="drsentry.yaml")


class WrittenCredentials:
    """The credentials port as `drsentry check` uses it: the DSN as written."""

    def __init__(self, dsn: str) -> None:
        self.written = dsn

    def raw_dsn(self, *, dsn: str | None, secret_name: str | None) -> str:
        return self.written


def check(dsn: str, **target: Any) -> tuple[str, str]:
    credentials: Any = WrittenCredentials(dsn)
    return tls_check(credentials, TargetConfig(name="app", dsn=dsn, **target))


def test_check_warns_when_the_configuration_asks_for_require() -> None:
    status, detail = check("postgresql://u:pw@db.example/app", sslmode="require")
    assert status == "warn"
    assert detail == (
        "source u@db.example:5432/app: sslmode=require (drsentry.yaml) encrypts but does not check "
        "the server's certificate; use verify-full"
    )


def test_check_warns_when_the_dsn_turns_tls_off_for_a_remote_server() -> None:
    status, detail = check("postgresql://u:pw@db.example/app?sslmode=disable")
    assert status == "warn" and "(the DSN or its secret) may connect without TLS at all" in detail


def test_check_passes_verify_full_and_names_the_ca() -> None:
    status, detail = check("postgresql://u:pw@db.example/app", sslrootcert="/etc/ca.pem")
    assert (status, detail) == ("pass", "source u@db.example:5432/app: sslmode=verify-full, CA /etc/ca.pem")
    assert check("postgresql://u:pw@127.0.0.1/app?sslmode=disable")[0] == "pass"


# The pgtools layer's recipe ---------------------------------------------------------------


def run_check_layer(layer: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "layers/pgtools/Makefile"), "check-layer",
         f"ARTIFACTS_DIR={layer}"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def fake_layer(layer: Path, tools: tuple[str, ...] = ("pg_dump", "pg_restore", "psql")) -> Path:
    (layer / "bin").mkdir(parents=True)
    for tool in tools:
        wrapper = layer / "bin" / tool
        wrapper.write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) 17.2'\n")
        wrapper.chmod(0o755)
    (layer / "pgtools" / "certs").mkdir(parents=True)
    return layer / "pgtools" / "certs" / "rds-global-bundle.pem"


def test_the_layer_recipe_refuses_a_layer_without_pg_dump(tmp_path: Path) -> None:
    # Given what `sam build --exclude PgToolsLayer` would ship: a folder with no tools
    result = run_check_layer(tmp_path)

    # Then the build fails, naming what is missing and what to do
    assert result.returncode != 0
    assert "refusing to produce a layer without pg_dump" in result.stderr
    assert "PgToolsLayerArn" in result.stderr


def test_the_layer_recipe_refuses_a_layer_without_the_ca_bundle(tmp_path: Path) -> None:
    bundle = fake_layer(tmp_path)
    bundle.write_text("<html>not a certificate</html>\n")
    result = run_check_layer(tmp_path)
    assert result.returncode != 0
    assert "without the RDS certificate bundle" in result.stderr


def test_the_layer_recipe_accepts_tools_that_run_and_a_pem_bundle(tmp_path: Path) -> None:
    make_ca("bundle").write(fake_layer(tmp_path))
    result = run_check_layer(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "pg_dump pg_restore psql and the RDS certificate bundle are in place" in result.stdout
