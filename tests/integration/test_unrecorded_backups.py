"""A dump whose upload completed but whose record was never written (the run was killed between
the two) is found by `drsentry catalog rebuild` and by every archive run, and reported.

The situation is made exactly as such a run leaves it: a real backup, then its catalog item
deleted through the table (and, for a run killed before its manifest, the manifest too)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from locked_objects import destroy_every_version
from typer.testing import CliRunner

from drsentry.adapters.table.keys import backup_sk, key, target_pk
from drsentry.core.config import dump_config
from drsentry.core.records import BackupRecord
from drsentry.jobs.archive.job import archive_target
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import Runtime, build_runtime
from drsentry.operator.cli import root_command
from drsentry.operator.rebuild import rebuild_catalog

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(source_db: str, make_config: Any) -> Runtime:
    config, _ = make_config(source_db)
    return build_runtime(config)


def lose_the_record(runtime: Runtime, record: BackupRecord, *, manifest_too: bool) -> None:
    """What a run killed after its upload leaves: the objects, and no catalog item."""
    table = runtime.catalog.table
    table.client.delete_item(
        TableName=table.name, Key=key(target_pk(record.target), backup_sk(record.backup_id))
    )
    if manifest_too:
        destroy_every_version(runtime.store.s3, record.bucket, record.manifest_key)
    assert runtime.catalog.list_backups(record.target) == []


def test_a_dump_without_record_or_manifest_is_reported_by_rebuild_and_archive(
    runtime: Runtime, subscribe_notices: Any
) -> None:
    # Given a dump stored by a run killed before it wrote its manifest and its record
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    lose_the_record(runtime, record, manifest_too=True)
    notices = subscribe_notices(runtime)

    # When `catalog rebuild` runs
    [rebuilt] = rebuild_catalog(runtime, "app")

    # Then it cannot recreate the record, and says which dump has none
    assert rebuilt.added == []
    assert list(rebuilt.unrecorded) == [record.key]
    assert "no record and no manifest" in rebuilt.unrecorded[record.key]
    assert runtime.catalog.list_backups("app") == []

    # When the archive runs
    report = archive_target(runtime, "app")

    # Then its report lists the dump, and its notice is a warning naming the key
    assert [(dump.key, dump.backup_id) for dump in report.unrecorded] == [(record.key, record.backup_id)]
    assert report.unrecorded_count == 1
    assert "1 unrecorded backup(s) in the bucket" in report.summary()
    [notice] = notices()
    assert notice["source"] == "archive"
    assert notice["severity"] == "warning"
    assert [dump["key"] for dump in notice["details"]["unrecorded_backups"]] == [record.key]


def test_a_dump_with_its_manifest_is_recovered_by_rebuild_and_reported_by_archive_until_then(
    runtime: Runtime,
) -> None:
    # Given a dump and its manifest stored by a run killed before it wrote its record
    record = backup_target(runtime, "app")
    lose_the_record(runtime, record, manifest_too=False)

    # When the archive runs first, then `catalog rebuild`, then the archive again
    before = archive_target(runtime, "app")
    [rebuilt] = rebuild_catalog(runtime, "app")
    after = archive_target(runtime, "app")

    # Then the first archive run reports it, saying rebuild can recover it; rebuild recreates the
    # record (nothing left unrecorded); the next archive run has nothing to report
    [dump] = before.unrecorded
    assert dump.key == record.key
    assert dump.manifest_key == record.manifest_key
    assert "catalog rebuild" in dump.reason()
    assert rebuilt.added == [record.backup_id]
    assert rebuilt.unrecorded == {}
    assert after.unrecorded == []
    assert after.unrecorded_count == 0


def test_the_dump_of_a_backup_running_now_is_not_reported(runtime: Runtime) -> None:
    # Given a backup that has stored its dump and is about to write its record (its lock held)
    record = backup_target(runtime, "app")
    lose_the_record(runtime, record, manifest_too=True)
    runtime.catalog.locks.acquire("app", "running-backup", ttl_seconds=600, job="backup")

    # When rebuild and the archive look at the bucket meanwhile
    [rebuilt] = rebuild_catalog(runtime, "app")
    report = archive_target(runtime, "app", dry_run=True)

    # Then neither reports it; once the lock is gone (the run died without recording), both do
    assert rebuilt.unrecorded == {}
    assert report.unrecorded == []
    runtime.catalog.locks.release("app", "running-backup", job="backup")
    [rebuilt] = rebuild_catalog(runtime, "app")
    assert list(rebuilt.unrecorded) == [record.key]


def test_the_command_line_lists_unrecorded_dumps(runtime: Runtime, tmp_path: Path) -> None:
    # Given a dump with neither record nor manifest
    record = backup_target(runtime, "app")
    lose_the_record(runtime, record, manifest_too=True)
    path = tmp_path / "drsentry.yaml"
    path.write_text(dump_config(runtime.config))

    # When the operator runs `catalog rebuild` and `run archive`
    rebuild = CliRunner().invoke(
        root_command, ["catalog", "rebuild", "--config", str(path)], terminal_width=250
    )
    archive = CliRunner().invoke(root_command, ["run", "archive", "--config", str(path)], terminal_width=250)

    # Then both name the dump on stderr; rebuild exits 1 (something needs a person), archive 0
    assert rebuild.exit_code == 1, rebuild.output
    assert f"unrecorded {record.key}: dump stored, no record and no manifest" in rebuild.stderr
    assert archive.exit_code == 0, archive.output
    assert "warning: 1 unrecorded backup(s) of app:" in archive.stderr
    assert f"unrecorded {record.key}:" in archive.stderr
