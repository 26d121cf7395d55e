"""Warnings an operator must read in the terminal, not only in the JSON log and Slack: a
misspelled or unversioned application bucket (targets[].storage), in `run backup` and in
`drsentry check`.

The CLI runs as a subprocess with its output piped, as cron and CI run it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any

import pytest
from cli_process import run_cli

pytestmark = pytest.mark.e2e

REGION = "us-east-1"


def drsentry(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, columns=100)


def application_bucket_checks(path: Any) -> list[dict[str, Any]]:
    run = drsentry("check", "--config", str(path), "--json")
    assert run.returncode in (0, 1), run.stderr
    return [check for check in json.loads(run.stdout)["checks"] if check["name"] == "application bucket"]


def test_backup_with_a_misspelled_application_bucket_shows_the_warning_in_the_terminal(
    source_db: str, make_config: Any
) -> None:
    # Given a target whose application bucket is misspelled (no such bucket)
    _, path = make_config(source_db, storage=[{"bucket": "acme-uplods", "region": REGION}])

    # When the backup runs in a terminal-less shell (cron mail)
    run = drsentry("run", "backup", "--config", str(path))

    # Then the database backup completed (exit 0), and the table and the summary line say that
    # the bucket's manifest failed, naming the bucket
    assert run.returncode == 0, run.stderr
    table, summary = run.stdout.rsplit("┘", 1)
    (row,) = [line for line in table.splitlines() if " app " in line]
    assert "completed" in row.split() and "storage" in row.split(), run.stdout
    assert "acme-uplods" in table and "NoSuchBucket" in table
    expected = "1 completed, 0 failed; warning: storage manifest failed for app acme-uplods"
    assert " ".join(summary.split()) == expected


def test_backup_without_application_buckets_has_a_clean_summary(source_db: str, make_config: Any) -> None:
    _, path = make_config(source_db)

    run = drsentry("run", "backup", "--config", str(path))

    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "1 completed, 0 failed"
    assert "storage manifest" not in run.stdout and "warning:" not in run.stdout


def test_check_fails_on_an_application_bucket_that_does_not_exist(source_db: str, make_config: Any) -> None:
    # Given a target whose application bucket does not exist
    _, path = make_config(source_db, storage=[{"bucket": "acme-uplods", "region": REGION}])

    # When the deployment is checked
    run = drsentry("check", "--config", str(path))

    # Then it is not ready, and the line names the bucket
    assert run.returncode == 1, run.stdout
    assert run.stdout.strip().splitlines()[-1].startswith("NOT READY"), run.stdout
    (check,) = application_bucket_checks(path)
    assert check["status"] == "fail"
    assert check["target"] == "app"
    assert "acme-uplods does not exist" in check["detail"]


def test_check_warns_on_an_application_bucket_without_versioning(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given two application buckets, one versioned and one not
    unversioned, versioned = f"acme-plain-{secrets.token_hex(3)}", f"acme-kept-{secrets.token_hex(3)}"
    s3 = clients.s3(REGION)
    s3.create_bucket(Bucket=unversioned)
    s3.create_bucket(Bucket=versioned)
    s3.put_bucket_versioning(Bucket=versioned, VersioningConfiguration={"Status": "Enabled"})
    _, path = make_config(
        source_db,
        storage=[{"bucket": unversioned, "region": REGION}, {"bucket": versioned, "region": REGION}],
    )

    # When the deployment is checked
    checks = application_bucket_checks(path)

    # Then the unversioned bucket is a warning that says why it matters, the versioned one passes
    by_status = {check["status"]: check["detail"] for check in checks}
    assert sorted(by_status) == ["pass", "warn"]
    assert unversioned in by_status["warn"]
    assert "a deleted or overwritten object cannot be recovered" in by_status["warn"]
    assert versioned in by_status["pass"]
