"""The run's context an auditor reads in a drill report: nothing secret, everything checkable."""

from __future__ import annotations

import hashlib
import importlib.metadata
import tomllib
from pathlib import Path

import pytest

import drsentry
from drsentry.core.config import dump_config, parse_config
from drsentry.operator.provenance import config_digest, database_location, drsentry_version

ROOT = Path(__file__).parents[2]
CONFIG = """
storage: {bucket: acme-dr-backups, region: us-east-1}
targets: [{name: app, dsn: "postgresql://app:s3cret@db.internal:6432/appdb"}]
"""


def test_the_version_is_the_installed_packages_and_the_source_trees() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

    assert drsentry_version() == importlib.metadata.version("drsentry") == declared
    assert drsentry.__version__ == declared  # what the Lambda layer, without metadata, reports


def test_without_package_metadata_the_source_trees_version_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)

    assert drsentry_version() == drsentry.__version__


@pytest.mark.parametrize(
    ("dsn", "location"),
    [
        ("postgresql://app:s3cret@db.internal:6432/appdb", "db.internal:6432/appdb"),
        ("host=db.internal user=app password=s3cret dbname=appdb", "db.internal:5432/appdb"),
        ("postgresql://app:s3cret@db.internal/appdb?sslmode=require", "db.internal:5432/appdb"),
    ],
)
def test_a_database_is_named_by_host_port_and_name_only(dsn: str, location: str) -> None:
    assert database_location(dsn) == location


def test_the_config_digest_is_what_sha256sum_gives_for_the_file(tmp_path: Path) -> None:
    path = tmp_path / "drsentry.yaml"
    path.write_text(CONFIG)

    digest = config_digest(parse_config(CONFIG), path)

    assert digest == f"sha256:{hashlib.sha256(CONFIG.encode()).hexdigest()} of drsentry.yaml"


def test_without_a_file_the_digest_is_of_the_canonical_configuration() -> None:
    config = parse_config(CONFIG)

    digest = config_digest(config)

    assert digest == (
        f"sha256:{hashlib.sha256(dump_config(config).encode()).hexdigest()} of the canonical configuration"
    )
    assert config_digest(parse_config(dump_config(config))) == digest  # the same settings, the same digest
