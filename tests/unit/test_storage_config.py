"""drsentry.yaml: `targets[].storage`, `targets[].smoke` and `verify.storage_drop_tolerance`."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from drsentry.core.config import dump_config, parse_config
from drsentry.core.errors import ConfigError
from drsentry.jobs.verify.rules import check_plan


def config_text(**target: Any) -> str:
    raw: dict[str, Any] = {
        "storage": {"bucket": "acme-dr-backups", "region": "us-east-1"},
        "targets": [{"name": "app", "dsn": "postgresql://app@db/app", **target}],
    }
    return yaml.safe_dump(raw)


def error_of(**target: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(config_text(**target))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_storage_and_smoke_default_to_nothing() -> None:
    target = parse_config(config_text()).targets[0]
    assert target.storage == []
    assert target.smoke == []


def test_storage_buckets_parse_with_an_empty_prefix_by_default() -> None:
    target = parse_config(
        config_text(
            storage=[
                {"bucket": "acme-uploads", "region": "us-east-1"},
                {"bucket": "acme-invoices", "region": "eu-west-1", "prefix": "2026/"},
            ]
        )
    ).targets[0]
    assert [(b.bucket, b.region, b.prefix) for b in target.storage] == [
        ("acme-uploads", "us-east-1", ""),
        ("acme-invoices", "eu-west-1", "2026/"),
    ]


def test_a_storage_bucket_needs_a_region() -> None:
    assert error_of(storage=[{"bucket": "acme-uploads"}]) == (
        "drsentry.yaml: targets[0].storage[0].region: required field is missing"
    )


def test_an_unknown_storage_field_is_named() -> None:
    message = error_of(storage=[{"bucket": "acme-uploads", "region": "us-east-1", "versioned": True}])
    assert message == "drsentry.yaml: targets[0].storage[0].versioned: unknown field"


def test_an_invalid_bucket_name_is_refused() -> None:
    message = error_of(storage=[{"bucket": "Acme_Uploads", "region": "us-east-1"}])
    assert "targets[0].storage[0].bucket" in message
    assert "not a valid S3 bucket name" in message


def test_a_bucket_listed_twice_is_refused() -> None:
    bucket = {"bucket": "acme-uploads", "region": "us-east-1"}
    message = error_of(storage=[bucket, {**bucket, "prefix": "avatars/"}])
    assert "targets[0]" in message and "'acme-uploads' is listed twice" in message


def test_the_backup_bucket_itself_is_not_a_storage_bucket() -> None:
    message = error_of(storage=[{"bucket": "acme-dr-backups", "region": "us-east-1"}])
    assert "targets[0].storage[0].bucket: 'acme-dr-backups' is drsentry's own backup bucket" in message


def test_smoke_checks_take_a_url_or_sql_with_the_seeds_defaults() -> None:
    target = parse_config(
        config_text(
            smoke=[
                {"name": "health", "url": "https://app.example.com/health"},
                {
                    "name": "auth required",
                    "url": "https://app.example.com/api/me",
                    "expect_status": [401, 403],
                },
                {"name": "orgs restored", "sql": "select count(*) > 0 from organizations", "max_seconds": 10},
            ]
        )
    ).targets[0]
    health, auth, orgs = target.smoke
    assert (health.kind, health.expected_statuses, health.max_seconds) == ("http", [200], 2.0)
    assert (auth.kind, auth.expected_statuses) == ("http", [401, 403])
    assert (orgs.kind, orgs.max_seconds) == ("sql", 10.0)


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ({"name": "x"}, "set exactly one of url or sql"),
        ({"name": "x", "url": "https://a.example/", "sql": "select true"}, "set exactly one of url or sql"),
        ({"name": "x", "url": "file:///etc/passwd"}, "must start with http:// or https://"),
        ({"name": "x", "url": "https://ops:s3cret@a.example/"}, "must not hold credentials"),
        ({"name": "x", "url": "https://a.example/", "expect_status": 999}, "999 is not an HTTP status"),
        ({"name": "x", "url": "https://a.example/", "expect_status": []}, "at least one HTTP status"),
        ({"name": "x", "sql": "select true", "expect_status": 200}, "expect_status applies to url checks"),
        ({"name": "x", "url": "https://a.example/", "max_seconds": 0}, "greater than 0"),
        ({"name": "", "url": "https://a.example/"}, "targets[0].smoke[0].name"),
    ],
)
def test_a_bad_smoke_check_is_one_line_naming_it(check: dict[str, Any], expected: str) -> None:
    message = error_of(smoke=[check])
    assert message.startswith("drsentry.yaml: targets[0].smoke[0]")
    assert expected in message
    assert "s3cret" not in message


def test_smoke_check_names_are_unique() -> None:
    check = {"name": "health", "url": "https://a.example/health"}
    assert "duplicate smoke check names: health" in error_of(smoke=[check, check])


def test_storage_drop_tolerance_defaults_to_5_percent_and_is_a_fraction() -> None:
    verify = {"scratch_dsn": "postgresql://admin@scratch/postgres"}
    config = parse_config(config_text(verify=verify))
    assert config.targets[0].verify is not None
    assert config.targets[0].verify.storage_drop_tolerance == 0.05
    message = error_of(verify={**verify, "storage_drop_tolerance": 5})
    assert message.startswith("drsentry.yaml: targets[0].verify.storage_drop_tolerance:")


def test_the_new_sections_survive_a_dump_and_parse() -> None:
    config = parse_config(
        config_text(
            storage=[{"bucket": "acme-uploads", "region": "us-east-1", "prefix": "u/"}],
            smoke=[
                {"name": "health", "url": "https://app.example.com/health", "max_seconds": 1.5},
                {"name": "rows", "sql": "select true"},
            ],
        )
    )
    assert parse_config(dump_config(config)) == config


def test_verify_plans_one_critical_storage_check_per_bucket_after_the_others() -> None:
    target = parse_config(
        config_text(
            verify={"scratch_dsn": "postgresql://admin@scratch/postgres"},
            storage=[
                {"bucket": "acme-uploads", "region": "us-east-1"},
                {"bucket": "acme-invoices", "region": "us-east-1"},
            ],
        )
    ).targets[0]
    assert target.verify is not None
    without = check_plan(target.verify)
    plan = check_plan(target.verify, target.storage)
    assert plan[: len(without)] == without
    assert plan[len(without) :] == [
        ("storage: acme-uploads", "critical"),
        ("storage: acme-invoices", "critical"),
    ]
