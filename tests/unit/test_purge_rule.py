"""Which withdrawn backups an archive run purges and which hidden completed backups it reports
(jobs/archive/purge.py `plan_purge`): a pure rule over a version listing and the records' statuses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drsentry.adapters.buckets import VersionEntry
from drsentry.jobs.archive.purge import plan_purge
from drsentry.jobs.backup.rules import object_keys

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
FAILED = "20261130T100000000Z-0000000a"
COMPLETED = "20261130T090000000Z-0000000b"
UNRECORDED_OLD = "20261130T050000000Z-0000000c"
UNRECORDED_NEW = "20261130T113000000Z-0000000d"
VISIBLE_FAILED = "20261130T080000000Z-0000000e"


def _dump(backup_id: str) -> str:
    return object_keys("backups/", "app", backup_id)[0]


def _withdrawn(key: str, at: datetime) -> list[VersionEntry]:
    """A key with one stored version and a delete marker on top (what `Bucket.hide` leaves)."""
    return [
        VersionEntry(key, "m1", is_latest=True, delete_marker=True, last_modified=at),
        VersionEntry(key, "v1", is_latest=False, delete_marker=False, last_modified=at),
    ]


def test_a_failed_runs_withdrawn_objects_are_purged_versions_and_markers() -> None:
    # Given a failed backup whose dump and a database's dump (a backup of several) are withdrawn
    database_dump = _dump(FAILED).removesuffix(".dump") + "/sales.dump"
    versions = _withdrawn(_dump(FAILED), NOW) + _withdrawn(database_dump, NOW)

    # When the rule runs
    plan = plan_purge(versions, {FAILED: "failed"}, prefix="backups/", target="app", now=NOW)

    # Then every version and every marker of both keys is to be deleted, and nothing reported
    [purge] = plan.purge
    assert purge.backup_id == FAILED
    assert sorted(purge.versions) == sorted([(_dump(FAILED), "v1"), (database_dump, "v1")])
    assert sorted(purge.markers) == sorted([(_dump(FAILED), "m1"), (database_dump, "m1")])
    assert plan.hidden_completed == []


def test_a_hidden_completed_backup_is_reported_and_never_purged() -> None:
    versions = _withdrawn(_dump(COMPLETED), NOW - timedelta(days=2))

    plan = plan_purge(versions, {COMPLETED: "completed"}, prefix="backups/", target="app", now=NOW)

    assert plan.purge == []
    [hidden] = plan.hidden_completed
    assert hidden.backup_id == COMPLETED
    assert hidden.keys == [_dump(COMPLETED)]
    assert "completed backup hidden by a delete marker: remove the marker to restore it" in hidden.warning()
    assert _dump(COMPLETED) in hidden.warning()


def test_an_unrecorded_withdrawn_backup_waits_until_its_run_is_surely_over() -> None:
    # Given two withdrawn backups without a record: one withdrawn 4 hours ago, one 10 minutes ago
    versions = _withdrawn(_dump(UNRECORDED_OLD), NOW - timedelta(hours=4)) + _withdrawn(
        _dump(UNRECORDED_NEW), NOW - timedelta(minutes=10)
    )

    plan = plan_purge(versions, {}, prefix="backups/", target="app", now=NOW, grace=timedelta(hours=3))

    # Then only the old one is purged (the other's run may still be about to record it)
    assert [purge.backup_id for purge in plan.purge] == [UNRECORDED_OLD]


def test_visible_objects_and_keys_outside_a_backup_are_left_alone() -> None:
    # Given a failed backup's dump still current (a delete marker on an older version only),
    # and a withdrawn object that belongs to no backup
    visible = [
        VersionEntry(_dump(VISIBLE_FAILED), "v2", is_latest=True, delete_marker=False, last_modified=NOW),
        VersionEntry(_dump(VISIBLE_FAILED), "m1", is_latest=False, delete_marker=True, last_modified=NOW),
    ]
    stray = _withdrawn("backups/app/notes.txt", NOW - timedelta(days=9))

    plan = plan_purge(visible + stray, {VISIBLE_FAILED: "failed"}, prefix="backups/", target="app", now=NOW)

    # Then nothing is purged and nothing reported
    assert plan.purge == [] and plan.hidden_completed == []
