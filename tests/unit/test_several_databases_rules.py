"""A target of several databases, without a server: the `databases` setting's validation (one
line naming `targets[N].databases`), the record's per-database view and object list, and which
configured checks apply to which database."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from drsentry.core.config import VerifyConfig, parse_config
from drsentry.core.errors import BackupNotFound, ConfigError
from drsentry.core.records import BackupRecord, ClusterGlobals, DatabaseBackup
from drsentry.jobs.backup.rules import database_object_keys, object_keys
from drsentry.jobs.verify.rules import scratch_database_name, verify_for_database


def config_with(**target: Any) -> str:
    raw = {
        "storage": {"bucket": "dr-backups", "region": "us-east-1"},
        "targets": [
            {"name": "other", "dsn": "postgresql://u@h/o"},
            {"name": "app", "dsn": "postgresql://u@h/app", **target},
        ],
    }
    return yaml.safe_dump(raw)


@pytest.mark.parametrize(
    ("databases", "message"),
    [
        ([], "targets[1].databases: expected a non-empty list of database names or 'all'"),
        (["app", "app"], "targets[1].databases: database 'app' is listed twice"),
        ("everything", "targets[1].databases: expected a list of database names or 'all', got 'everything'"),
        ([""], "targets[1].databases: '' is not a database name"),
        (["x" * 64], "targets[1].databases: database name 'xxxx"),
        ([3], "targets[1].databases: 3 is not a database name"),
    ],
)
def test_bad_databases_are_one_line_naming_the_field(databases: Any, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(config_with(databases=databases))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_databases_may_be_a_list_all_or_absent() -> None:
    assert parse_config(config_with(databases=["app", "analytics"])).targets[1].databases == [
        "app",
        "analytics",
    ]
    assert parse_config(config_with(databases="all")).targets[1].databases == "all"
    assert parse_config(config_with()).targets[1].databases is None


def test_an_assertion_may_name_only_a_listed_database() -> None:
    verify = {
        "scratch_dsn": "postgresql://u@s/postgres",
        "assertions": [{"name": "a", "sql": "select true", "database": "x"}],
    }
    with pytest.raises(ConfigError, match=r"targets\[1\]: assertion 'a': database 'x' is not in databases"):
        parse_config(config_with(databases=["app"], verify=verify))
    with pytest.raises(
        ConfigError, match=r"targets\[1\]: assertion 'a': database applies only to a target with databases"
    ):
        parse_config(config_with(verify=verify))
    assert parse_config(config_with(databases="all", verify=verify)).targets[1].verify is not None


def several() -> BackupRecord:
    dump, manifest = object_keys("backups/", "app", "20261122T180000042Z-1a2b3c4d")
    entries = []
    for name, size in (("app", 100), ("an/alytics", 50)):
        key, manifest_key = database_object_keys("backups/", "app", "20261122T180000042Z-1a2b3c4d", name)
        entries.append(
            DatabaseBackup(
                name=name,
                key=key,
                manifest_key=manifest_key,
                sha256=f"sha-{name}",
                size_bytes=size,
                tables={"t": size},
            )
        )
    return BackupRecord(
        target="app",
        backup_id="20261122T180000042Z-1a2b3c4d",
        status="completed",
        started_at="2026-11-22T18:00:00Z",
        bucket="dr-backups",
        key=entries[0].key,
        manifest_key=manifest,
        size_bytes=150,
        globals=ClusterGlobals(
            key=dump.removesuffix(".dump") + ".globals.sql", sha256="g", size_bytes=7, role_passwords=False
        ),
        databases=entries,
    )


def test_every_object_of_a_backup_of_several_databases_is_under_its_prefix_and_listed() -> None:
    record = several()
    prefix = record.manifest_key.removesuffix(".manifest.json")
    assert [(o.key.removeprefix(prefix), o.sha256, o.database) for o in record.objects()] == [
        ("/app.dump", "sha-app", "app"),
        ("/an%2Falytics.dump", "sha-an/alytics", "an/alytics"),
        (".globals.sql", "g", None),
    ]
    assert record.all_keys()[-1] == record.manifest_key
    assert not any(key.endswith(".manifest.json") for key in record.all_keys()[:-1])


def test_a_database_view_is_shaped_like_a_single_database_backup() -> None:
    view = several().for_database("an/alytics")
    assert (view.key, view.sha256, view.size_bytes, view.tables) == (
        several().databases[1].key,  # type: ignore[index]
        "sha-an/alytics",
        50,
        {"t": 50},
    )
    assert view.databases is None and view.globals == several().globals
    with pytest.raises(BackupNotFound, match="has no database 'nope' .it has: app, an/alytics"):
        several().for_database("nope")


def test_a_single_database_record_dumps_without_a_databases_field() -> None:
    record = several().model_copy(update={"databases": None})
    assert "databases" not in record.model_dump()
    assert "databases" in several().model_dump()


def test_configured_checks_go_to_the_database_they_name_and_the_rest_to_the_first() -> None:
    verify = VerifyConfig.model_validate(
        {
            "scratch_dsn": "postgresql://u@s/postgres",
            "critical_tables": ["organizations", "analytics.events.page_views", "billing.invoices"],
            "rls_tables": ["analytics.private"],
            "min_size": "1MB",
            "assertions": [
                {"name": "a", "sql": "select true"},
                {"name": "b", "sql": "select true", "database": "analytics"},
            ],
        }
    )
    names = ["app", "analytics"]
    app, analytics = (verify_for_database(verify, name, names) for name in names)
    assert app.critical_tables == ["organizations", "billing.invoices"]
    assert analytics.critical_tables == ["events.page_views"]
    assert (app.rls_tables, analytics.rls_tables) == ([], ["private"])
    assert [a.name for a in app.assertions] == ["a"] and [a.name for a in analytics.assertions] == ["b"]
    assert (app.min_size, analytics.min_size) == (1024 * 1024, 0)


def test_each_database_gets_its_own_scratch_database_name() -> None:
    names = {scratch_database_name("20261122T180000042Z-1a2b3c4d", index) for index in range(3)}
    assert len(names) == 3 and all(len(name) <= 63 for name in names)
