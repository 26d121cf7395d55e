"""The catalog table: one package spells its keys, and the repositories on it store items
exactly where existing catalogs hold them (in-process moto, no server)."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from moto import mock_aws

from drsentry.adapters.aws import AwsClients
from drsentry.adapters.table import Catalog, create_table, table_definition
from drsentry.adapters.table.catalog import backup_item
from drsentry.adapters.table.items import to_item
from drsentry.core.config import parse_config
from drsentry.core.errors import CatalogError, RunInProgress
from drsentry.core.records import BackupRecord, ReplicaDetail, VerificationRecord, iso, new_backup_id
from drsentry.jobs.runtime import build_runtime
from drsentry.operator.readiness import ReadinessRun

REGION = "us-east-1"
TABLE = "catalog-unit"
PACKAGE = Path(__file__).resolve().parents[2] / "layers" / "drsentry" / "drsentry"
TABLE_PACKAGE = PACKAGE / "adapters" / "table"
# Every key prefix the table has ever used, and the attribute names that make a key.
KEY_PREFIXES = ("target#", "backup#", "verify#", "replication#", "lock#", "alert#", "idempotency#")
KEY_NAMES = {"pk", "sk", "expires_at", "backup_id-index"}


# Nothing outside adapters/table builds a key ----------------------------------------------


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef))]
    found = set()
    for node in nodes:
        body = getattr(node, "body", [])
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            found.add(id(body[0].value))
    return found


def key_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string literal (f-string parts too) or keyword argument (``pk=``)
    that spells a key; docstrings aside."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg in KEY_NAMES:
            found.append((node.lineno, f"{node.arg}="))
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in skip:
            continue
        if node.value in KEY_NAMES or any(prefix in node.value for prefix in KEY_PREFIXES):
            found.append((node.lineno, node.value))
    return found


def test_the_key_scan_finds_keys_in_f_strings_and_keywords_but_not_in_docstrings() -> None:
    source = (
        '"""Locks live at lock#{target}."""\n'
        'lock = {"pk": f"lock#{target}", "owner": owner}\n'
        "fields.update(sk=sort_key, kind=KIND)\n"
    )

    assert sorted(key_literals(source)) == [(2, "lock#"), (2, "pk"), (3, "sk=")]


def test_only_the_table_package_spells_a_key() -> None:
    # Given every module of the shared package outside adapters/table
    modules = [path for path in PACKAGE.rglob("*.py") if TABLE_PACKAGE not in path.parents]
    assert len(modules) > 30

    # When their string literals are scanned for key prefixes and key attribute names
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}"
        for path in modules
        for line, text in key_literals(path.read_text(encoding="utf-8"))
    ]

    # Then none builds a key: drsentry.adapters.table.keys owns them all
    assert offenders == []


# The table itself -----------------------------------------------------------------------


@pytest.fixture
def dynamodb(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # the in-process mock, never a server
    with mock_aws():
        yield AwsClients(REGION).dynamodb


@pytest.fixture
def catalog(dynamodb: Any) -> Catalog:
    create_table(dynamodb, TABLE)
    return Catalog(dynamodb, TABLE)


def stored(dynamodb: Any, pk: str, sk: str) -> dict[str, Any] | None:
    """The raw item at a key, as an existing catalog holds it."""
    item: dict[str, Any] | None = dynamodb.get_item(
        TableName=TABLE, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    ).get("Item")
    return item


def test_creating_the_table_twice_leaves_it_with_its_index_and_ttl(dynamodb: Any) -> None:
    create_table(dynamodb, TABLE)
    create_table(dynamodb, TABLE)

    described = Catalog(dynamodb, TABLE).describe()

    assert described is not None
    assert (described.status, described.has_backup_id_index) == ("ACTIVE", True)
    assert (described.ttl_on, described.ttl_attribute, described.ttl_on_expiry_attribute) == (
        True,
        "expires_at",
        True,
    )


def test_describing_a_missing_table_says_so(dynamodb: Any) -> None:
    assert Catalog(dynamodb, "nobody-made-this-table").describe() is None


def _runtime(table: str) -> Any:
    raw = {
        "storage": {"bucket": "dr-unit", "region": REGION},
        "catalog": {"table": table},
        "targets": [{"name": "app", "dsn": "postgresql://app@localhost/app"}],
    }
    return build_runtime(parse_config(json.dumps(raw)), clients=AwsClients(REGION))


@pytest.mark.parametrize(
    ("index", "ttl_attribute", "expected"),
    [
        (True, "expires_at", ("pass", f"table {TABLE}: ACTIVE, backup_id-index present, TTL on")),
        (True, None, ("warn", f"table {TABLE}: TTL is off, so verification records are never expired")),
        (
            True,
            "ttl",
            (
                "warn",
                f"table {TABLE}: TTL is on ttl, not expires_at, so verification records are never expired",
            ),
        ),
        (
            False,
            "expires_at",
            ("fail", f"table {TABLE} lacks the backup_id-index index that `drsentry restore ID` needs"),
        ),
    ],
    ids=["ready", "ttl-off", "ttl-on-another-attribute", "no-index"],
)
def test_readiness_judges_the_table_the_catalog_describes(
    dynamodb: Any, index: bool, ttl_attribute: str | None, expected: tuple[str, str]
) -> None:
    # Given a catalog table made by hand, with or without the index and TTL
    definition = table_definition(TABLE)
    if not index:
        del definition["GlobalSecondaryIndexes"]
        definition["AttributeDefinitions"] = [
            attribute
            for attribute in definition["AttributeDefinitions"]
            if attribute["AttributeName"] != "backup_id"
        ]
    dynamodb.create_table(**definition)
    if ttl_attribute:
        dynamodb.update_time_to_live(
            TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl_attribute}
        )

    # When `drsentry check` looks at it
    result = ReadinessRun(_runtime(TABLE), "drsentry.yaml")._catalog_table()

    # Then the line says what an operator must fix
    assert result == expected


def test_readiness_names_a_missing_table(dynamodb: Any) -> None:
    assert ReadinessRun(_runtime("gone"), "drsentry.yaml")._catalog_table() == (
        "fail",
        "the catalog table gone does not exist",
    )


# Every DynamoDB error is one CatalogError line ---------------------------------------------


def _record(started: datetime, status: str = "completed", **fields: Any) -> BackupRecord:
    backup_id = new_backup_id(started)
    return BackupRecord(
        target="app",
        backup_id=backup_id,
        status=status,  # type: ignore[arg-type]
        started_at=iso(started),
        bucket="dr-unit",
        key=f"backups/app/{backup_id}.dump",
        manifest_key=f"backups/app/{backup_id}.manifest.json",
        **fields,
    )


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
OPERATIONS = {
    "put_backup": (lambda c: c.put_backup(_record(NOW)), "writing backup record "),
    "iter_backups": (lambda c: list(c.iter_backups("app")), "listing backups of app"),
    "get_backup": (lambda c: c.get_backup("20261122T180000042Z-1a2b3c4d"), "looking up backup "),
    "lock": (lambda c: c.locks.acquire("app", "run-1", 60), "taking the lock of app"),
    "verify lock": (
        lambda c: c.locks.release("app", "run-1", job="verify"),
        "releasing the verify lock of app",
    ),
    "verification": (lambda c: c.verifications.latest("app"), "reading verifications of app"),
    "replication check": (
        lambda c: c.replication_checks.latest("app"),
        "reading the replication checks of app",
    ),
    "window": (
        lambda c: c.replication_checks.backups_in_window("app", NOW, ["backup_id"], []),
        "listing the backups of app",
    ),
    "alert state": (lambda c: c.alert_states.load("verify", "app"), "reading the alert state of verify app"),
}


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_table_that_is_not_there_is_one_catalog_error_line(dynamodb: Any, operation: str) -> None:
    # Given a catalog whose table does not exist
    catalog = Catalog(dynamodb, "nowhere")
    call, action = OPERATIONS[operation]

    # When a repository touches it
    with pytest.raises(CatalogError) as raised:
        call(catalog)

    # Then the error names the table, what was being done and what DynamoDB answered, in one line
    message = str(raised.value)
    assert message.startswith(f"catalog table 'nowhere': {action}")
    assert " failed: ResourceNotFoundException" in message
    assert "\n" not in message


# Run locks -------------------------------------------------------------------------------


def test_verify_and_backup_locks_are_separate_items_under_todays_keys(
    dynamodb: Any, catalog: Catalog
) -> None:
    # Given a backup and a verification of the same target, both running
    catalog.locks.acquire("app", "backup-run", 600)
    catalog.locks.acquire("app", "verify-run", 600, job="verify")

    # Then each holds its own lock, where existing catalogs keep them
    backup_lock = stored(dynamodb, "lock#app", "lock")
    verify_lock = stored(dynamodb, "lock#verify#app", "lock")
    assert backup_lock is not None and backup_lock["owner"] == {"S": "backup-run"}
    assert verify_lock is not None and verify_lock["owner"] == {"S": "verify-run"}

    # And a second verification is refused while the first holds the lock
    with pytest.raises(RunInProgress, match="another verify run of target 'app' is running"):
        catalog.locks.acquire("app", "second-verify", 600, job="verify")

    # And only its owner releases it
    catalog.locks.release("app", "someone-else", job="verify")
    assert stored(dynamodb, "lock#verify#app", "lock") is not None
    catalog.locks.release("app", "verify-run", job="verify")
    assert stored(dynamodb, "lock#verify#app", "lock") is None
    assert stored(dynamodb, "lock#app", "lock") is not None


# Replication checks ----------------------------------------------------------------------


def test_a_replication_check_is_stored_under_todays_key_and_the_newest_is_read_back(
    dynamodb: Any, catalog: Catalog
) -> None:
    # Given two checks of one target, an hour apart
    earlier, later = iso(NOW - timedelta(hours=1)), iso(NOW)
    catalog.replication_checks.save("app", earlier, "run-1", {"target": "app", "status": "ok", "checked": 3})
    catalog.replication_checks.save(
        "app", later, "run-2", {"target": "app", "status": "failure", "checked": 4}
    )

    # When the newest is read
    newest = catalog.replication_checks.latest("app")

    # Then it is the later one, stored where existing catalogs hold it and kept 90 days
    assert newest is not None and (newest["status"], newest["checked"]) == ("failure", 4)
    item = stored(dynamodb, "target#app", f"replication#{later}#run-2")
    assert item is not None and item["kind"] == {"S": "replication"}
    assert int(item["expires_at"]["N"]) == int((NOW + timedelta(days=90)).timestamp())
    assert catalog.replication_checks.latest("other") is None


def test_the_window_holds_the_completed_backups_started_in_it_newest_first(catalog: Catalog) -> None:
    # Given backups before and inside a 7-day window, a failed one, and other items of the target
    window_start = NOW - timedelta(days=7)
    too_old = _record(window_start - timedelta(seconds=1))
    first = _record(
        window_start,
        tables={"public.orders": 3},
        replica="ok",
        replica_detail=ReplicaDetail(bucket="dr-replica", region="eu-west-1", checked_at=iso(NOW), etag="e1"),
    )
    failed = _record(NOW - timedelta(days=1), status="failed")
    newest = _record(NOW - timedelta(hours=1))
    for record in (too_old, first, failed, newest):
        catalog.put_backup(record)
    catalog.verifications.put(
        VerificationRecord(target="app", backup_id=newest.backup_id, verified_at=iso(NOW), status="success")
    )
    catalog.replication_checks.save("app", iso(NOW), "run-1", {"target": "app"})

    # When the replication check reads its window, asking for a few fields only
    window = catalog.replication_checks.backups_in_window(
        "app", window_start, ["backup_id", "started_at", "bucket", "key", "manifest_key", "replica"], ["etag"]
    )

    # Then it gets the completed backups of the window, newest first, and only what it asked for
    assert [record.backup_id for record in window] == [newest.backup_id, first.backup_id]
    assert window[1].replica == "ok"
    assert window[1].replica_detail == ReplicaDetail(etag="e1")
    assert window[1].tables == {}


# Items as the copy and the replication check have always written them (checked_at, then
# for an identical replica its version and fingerprint, or the reason it is not identical).
TODAYS_REPLICA_DETAILS = [
    {"bucket": "dr-replica", "region": "eu-west-1", "checked_at": "2026-11-22T12:00:00Z"},
    {
        "bucket": "dr-replica",
        "region": "eu-west-1",
        "checked_at": "2026-11-22T12:00:00Z",
        "version_id": "3HL4kqtJvjVBH40Nrjfkd",
        "etag": "9b2cf535f27731c974343645a3985328",
        "last_modified": "2026-11-22T11:59:58Z",
    },
    {
        "bucket": "dr-replica",
        "region": "eu-west-1",
        "checked_at": "2026-11-22T12:00:00Z",
        "error": "replica missing 2.0h after the backup (max_lag 15m)",
    },
]


@pytest.mark.parametrize("detail", TODAYS_REPLICA_DETAILS)
def test_a_replica_detail_in_todays_shape_reads_and_is_stored_back_unchanged(
    dynamodb: Any, catalog: Catalog, detail: dict[str, str]
) -> None:
    # Given a backup item whose replica_detail map is in today's shape, written raw
    record = _record(NOW - timedelta(hours=2), replica="ok")
    raw = to_item({**backup_item(record), "replica_detail": detail})
    dynamodb.put_item(TableName=TABLE, Item=raw)
    pk, sk = "target#app", f"backup#{record.backup_id}"

    # When the catalog reads it, and writes the record and its replica detail back
    read = catalog.get_backup(record.backup_id)
    catalog.put_backup(read)
    after_put = stored(dynamodb, pk, sk)
    assert read.replica_detail is not None
    catalog.update_backup("app", record.backup_id, {"replica_detail": read.replica_detail.model_dump()})
    after_update = stored(dynamodb, pk, sk)

    # Then the detail is typed, and both writes store exactly the map that was there: no field
    # added, none stored as NULL
    assert read.replica_detail == ReplicaDetail(**detail)
    assert after_put is not None and after_put["replica_detail"] == raw["replica_detail"]
    assert after_update is not None and after_update["replica_detail"] == raw["replica_detail"]
    assert read.model_dump()["replica_detail"] == detail


# Alert states ----------------------------------------------------------------------------


def test_an_alert_state_round_trips_under_todays_key(dynamodb: Any, catalog: Catalog) -> None:
    # Given Slack was never told anything about verify/app
    assert catalog.alert_states.load("verify", "app") is None

    # When the notifier stores what it just told Slack
    state = {"severity": "critical", "status": "failure", "failing_checks": ["row counts"], "since": iso(NOW)}
    catalog.alert_states.save("verify", "app", state, run_id="run-1", saved_at=NOW)

    # Then it reads the state back, kept where existing catalogs hold it, for 90 days
    loaded = catalog.alert_states.load("verify", "app")
    assert loaded is not None and {name: loaded[name] for name in state} == state
    item = stored(dynamodb, "alert#verify#app", "state")
    assert item is not None
    assert (item["kind"], item["source"], item["target"], item["run_id"]) == (
        {"S": "alert-state"},
        {"S": "verify"},
        {"S": "app"},
        {"S": "run-1"},
    )
    assert int(item["expires_at"]["N"]) == int((NOW + timedelta(days=90)).timestamp())
    assert catalog.alert_states.load("backup", "app") is None


# Idempotency -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Couldn't determine the remaining time left")
def test_idempotency_records_live_in_their_own_partition_with_the_table_ttl(
    dynamodb: Any, catalog: Catalog
) -> None:
    # Given a scheduled run made idempotent on the catalog table
    runs: list[str] = []
    config = IdempotencyConfig(event_key_jmespath="event_id", use_local_cache=False)

    @idempotent_function(
        data_keyword_argument="request", persistence_store=catalog.idempotency_persistence(), config=config
    )
    def scheduled_run(request: dict[str, Any]) -> dict[str, Any]:
        runs.append(request["event_id"])
        return {"status": "ok"}

    # When the same event is delivered twice
    first = scheduled_run(request={"event_id": "e-1"})
    second = scheduled_run(request={"event_id": "e-1"})

    # Then the work ran once, and its record is in the idempotency partition with a TTL
    assert runs == ["e-1"]
    assert first == second == {"status": "ok"}
    items = dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "idempotency#drsentry"}},
    )["Items"]
    assert len(items) == 1
    assert "expires_at" in items[0]
