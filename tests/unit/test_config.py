"""drsentry.yaml validation: every problem is one line that names the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from drsentry.core.config import (
    dump_config,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    parse_size,
)
from drsentry.core.errors import ConfigError, UnknownTarget

CONTRACT_EXAMPLE = """
rpo: 1h
rto: 15m
storage:
  bucket: acme-dr-backups
  region: us-east-1
  prefix: backups/
  kms_key: alias/acme-dr
  replica: {bucket: acme-dr-replica, region: eu-west-1, mode: copy, max_lag: 15m}
  archive: {bucket: acme-dr-archive, storage_class: DEEP_ARCHIVE, lock_days: 2555}
retention: {hourly: 7d, daily: 30d, weekly: 365d, monthly: 2555d}
catalog: {table: drsentry-catalog}
notifications:
  sns_topic_arn: arn:aws:sns:us-east-1:123456789012:drsentry-alerts
  slack_webhook_secret: drsentry/slack
targets:
  - name: app
    dsn_secret: drsentry/app-db
    schedule: cron(0 * * * ? *)
    verify:
      scratch_dsn_secret: drsentry/scratch
      critical_tables: [organizations, profiles, appointments]
      functions: [book_appointment_with_lock]
      rls_tables: [profiles]
      min_size: 10MB
      row_count_tolerance: 0.10
      assertions:
        - name: recent rows
          sql: "select count(*) > 0 from appointments where created_at > now() - interval '2 days'"
          severity: warning
"""


def _with(path: str, value: object) -> str:
    """The contract example with one field replaced (dotted path, [n] for list items)."""
    raw = yaml.safe_load(CONTRACT_EXAMPLE)
    node = raw
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    node[parts[-1]] = value
    return yaml.safe_dump(raw)


def test_contract_example_is_valid() -> None:
    config = parse_config(CONTRACT_EXAMPLE)
    assert config.rpo == timedelta(hours=1)
    assert config.rto == timedelta(minutes=15)
    assert config.storage.replica is not None and config.storage.replica.max_lag == timedelta(minutes=15)
    assert config.retention.monthly == timedelta(days=2555)
    verify = config.targets[0].verify
    assert verify is not None
    assert verify.min_size == 10 * 1024 * 1024
    assert verify.assertions[0].severity == "warning"


def test_dump_and_parse_round_trip() -> None:
    config = parse_config(CONTRACT_EXAMPLE)
    assert parse_config(dump_config(config)) == config


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("rpo", "5y", "rpo: invalid duration '5y'"),
        ("storage.replica.max_lag", "soon", "storage.replica.max_lag: invalid duration 'soon'"),
        ("targets.0.verify.min_size", "10XB", "targets[0].verify.min_size: invalid size '10XB'"),
        ("storage.replica.mode", "rsync", "storage.replica.mode: Input should be 'copy' or 'crr'"),
        ("storage.prefix", "backups", "storage.prefix: prefix 'backups' must end with '/'"),
        ("targets.0.name", "App Prod", "targets[0].name: name 'App Prod' must be lower-case"),
        ("targets.0.verify.row_count_tolerance", "lots", "targets[0].verify.row_count_tolerance:"),
        ("storage.archive.storage_class", "COLD", "storage.archive.storage_class:"),
    ],
)
def test_bad_value_names_the_field(path: str, value: object, expected: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(_with(path, value), source="drsentry.yaml")
    message = str(error.value)
    assert message.startswith(f"drsentry.yaml: {expected}"), message
    assert "\n" not in message


def test_unknown_field_is_named() -> None:
    with pytest.raises(ConfigError, match=r"^drsentry.yaml: storage.bukcet: unknown field"):
        parse_config(CONTRACT_EXAMPLE.replace("  prefix: backups/", "  prefix: backups/\n  bukcet: x"))


def test_missing_required_field_is_named() -> None:
    raw = yaml.safe_load(CONTRACT_EXAMPLE)
    del raw["storage"]["bucket"]
    with pytest.raises(ConfigError, match=r"^drsentry.yaml: storage.bucket: required field is missing$"):
        parse_config(yaml.safe_dump(raw))


def test_dsn_and_secret_are_exclusive() -> None:
    raw = yaml.safe_load(CONTRACT_EXAMPLE)
    raw["targets"][0]["dsn"] = "postgresql://x@y/z"
    with pytest.raises(ConfigError, match=r"targets\[0\]: set exactly one of dsn_secret or dsn"):
        parse_config(yaml.safe_dump(raw))


def test_duplicate_targets_are_refused() -> None:
    raw = yaml.safe_load(CONTRACT_EXAMPLE)
    raw["targets"].append(dict(raw["targets"][0]))
    with pytest.raises(ConfigError, match="duplicate target names: app"):
        parse_config(yaml.safe_dump(raw))


def test_malformed_yaml_gives_the_line() -> None:
    with pytest.raises(ConfigError, match=r"malformed YAML at line 3"):
        parse_config("rpo: 1h\nstorage: {bucket: x\n")


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping of settings, got list"):
        parse_config("- a\n- b\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_target_lists_the_configured_ones() -> None:
    config = parse_config(CONTRACT_EXAMPLE)
    with pytest.raises(UnknownTarget, match=r"unknown target 'billing' \(configured: app\)"):
        config.target("billing")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400), ("36h", 129600), ("30d", 2592000), ("45s", 45), ("2w", 1209600)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10MB", 10 * 1024**2),
        ("512kB", 512 * 1024),
        ("1.5GB", int(1.5 * 1024**3)),
        ("2GiB", 2 * 1024**3),
        ("100", 100),
        ("7B", 7),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["10XB", "MB", "-1MB", "10 ib", ""])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(text)


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).parents[2] / "infra" / "drsentry.example.yaml"
    config = load_config(example)
    assert [target.name for target in config.targets] == ["app"]


def test_layer_requirements_match_pyproject() -> None:
    import tomllib

    root = Path(__file__).parents[2]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = (root / "layers" / "drsentry" / "requirements.txt").read_text().splitlines()
    layer = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert sorted(layer) == sorted(declared)


def test_dsn_from_an_rds_secret_requires_tls_unless_told_otherwise() -> None:
    from psycopg.conninfo import conninfo_to_dict

    from drsentry.adapters.secrets import dsn_from_secret
    from drsentry.adapters.tls import with_tls

    secret = {"host": "db.example", "port": 5432, "username": "app", "password": "pw", "dbname": "app"}
    # Credentials.dsn applies the TLS rule to what the secret gives: verify-full by default
    assert conninfo_to_dict(with_tls(dsn_from_secret(secret, "s")))["sslmode"] == "verify-full"
    relaxed = with_tls(dsn_from_secret({**secret, "sslmode": "require"}, "s"))
    assert conninfo_to_dict(relaxed)["sslmode"] == "require"
