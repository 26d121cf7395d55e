"""A completed backup hidden behind a delete marker (what a compromised backup function, which may
add delete markers but never delete a version, could do to it): the archive run reports it and
never purges it; deleting the marker restores it. On moto's server over HTTP."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from drsentry.jobs.archive.job import archive_target
from drsentry.jobs.archive.report import notice_for
from drsentry.jobs.backup.job import backup_target
from drsentry.jobs.runtime import build_runtime

pytestmark = pytest.mark.integration


def test_a_completed_backup_hidden_by_a_delete_marker_is_reported_and_not_purged(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given a completed, locked backup whose dump someone hid with a plain DeleteObject
    config, _ = make_config(source_db)
    runtime = build_runtime(config)
    record = backup_target(runtime, "app")
    assert record.status == "completed", record.error
    s3 = clients.s3()
    marker = s3.delete_object(Bucket=record.bucket, Key=record.key)
    assert marker["DeleteMarker"] is True
    assert s3.list_objects_v2(Bucket=record.bucket, Prefix=record.key).get("KeyCount", 0) == 0

    # When the archive run goes over the target
    report = archive_target(runtime, "app")

    # Then it reports the hidden completed backup, with its key, as a warning, and purges nothing
    assert report.purged == 0
    [hidden] = report.hidden_completed
    assert (hidden.backup_id, hidden.keys) == (record.backup_id, [record.key])
    notice, failing = notice_for(report, runtime.run_id)
    # (a warning at least: the first backup of the month is also due for its archive copy, which
    # cannot read a hidden dump and makes the notice critical)
    assert notice.severity in {"warning", "critical"}
    assert "hidden backups" in failing
    assert "1 completed backup(s) hidden by a delete marker" in notice.summary
    [warning] = notice.details["hidden_backups"]
    assert warning["warning"].startswith("completed backup hidden by a delete marker: remove the marker")
    assert record.key in warning["warning"]
    # and the dump's version is still there, still locked
    listing = s3.list_object_versions(Bucket=record.bucket, Prefix=record.key)
    [version] = [entry for entry in listing["Versions"] if entry["Key"] == record.key]
    head = s3.head_object(Bucket=record.bucket, Key=record.key, VersionId=version["VersionId"])
    assert head["ObjectLockMode"] == config.storage.lock_mode
    assert head["ObjectLockRetainUntilDate"] > datetime.now(UTC)

    # When the marker is deleted, as the warning says
    s3.delete_object(Bucket=record.bucket, Key=record.key, VersionId=marker["VersionId"])

    # Then the backup reads back whole, and the next archive run has nothing to report
    body = s3.get_object(Bucket=record.bucket, Key=record.key)["Body"].read()
    assert hashlib.sha256(body).hexdigest() == record.sha256
    assert archive_target(runtime, "app").hidden_completed == []
