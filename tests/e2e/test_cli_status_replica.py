"""`drsentry status`: one word for the replica state, the newest one.

The newest backup's own replica state (written by the copy after it, or by a check) and the
newest replication check's verdict are compared by their times; `replica` never says `ok`
beside a replication check that says `failure` about the same moment or later.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_process import run_cli

pytestmark = pytest.mark.e2e


def drsentry(*args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, columns=columns)


def json_of(*args: str) -> Any:
    run = drsentry(*args, "--json")
    assert run.returncode in (0, 1), run.stderr
    return json.loads(run.stdout)


def backup(path: Path) -> dict[str, Any]:
    run = drsentry("run", "backup", "--config", str(path), "--json")
    assert run.returncode == 0, run.stderr
    (record,) = json.loads(run.stdout)["backups"]
    return dict(record)


def test_a_failed_check_on_an_older_backup_is_the_replica_state(
    source_db: str, make_config: Any, clients: Any
) -> None:
    # Given two backups copied to the replica, and the older one's replica deleted
    config, path = make_config(source_db)
    older, newest = backup(path), backup(path)
    replica = config.storage.replica
    clients.s3(replica.region).delete_object(Bucket=replica.bucket, Key=older["key"])

    # When the replication check finds it missing (and the newest backup's replica ok)
    check = drsentry("run", "replication-check", "--config", str(path), "--json")
    assert check.returncode == 1, check.stderr
    listed = {record["backup_id"]: record for record in json_of("backups", "list", "--config", str(path))}
    assert listed[newest["backup_id"]]["replica"] == "ok"

    # Then status says failure in one vocabulary, with the reason, not ok beside a failed check
    (target,) = json_of("status", "--config", str(path))["targets"]
    assert target["replication"]["status"] == "failure"
    assert target["replica"] == "failure"
    assert target["replica_source"] == "replication-check"
    assert "no replica" in target["replica_reason"]
    # ... and the table, at 80 columns, shows the same word with its reason
    shown = drsentry("status", "--config", str(path))
    assert max(len(line) for line in shown.stdout.splitlines()) <= 80, shown.stdout
    words = shown.stdout.replace("│", " ").split()
    assert "failure:" in words and "ok" not in words, shown.stdout


def test_a_newer_failed_copy_wins_over_an_older_check_that_passed(
    source_db: str, make_config: Any, tmp_path: Path
) -> None:
    # Given a backup whose replica the check found identical
    _, path = make_config(source_db)
    backup(path)
    check = drsentry("run", "replication-check", "--config", str(path), "--json")
    assert check.returncode == 0, check.stderr

    # When a newer backup's copy fails (here: the replica bucket misspelled for that one run)
    raw = yaml.safe_load(path.read_text())
    raw["storage"]["replica"]["bucket"] = "nobody-made-this-replica"
    misspelled = tmp_path / "misspelled.yaml"
    misspelled.write_text(yaml.safe_dump(raw))
    newest = backup(misspelled)
    assert newest["replica"] == "failed"

    # Then status says failure, from the newest backup, next to the older check's ok
    (target,) = json_of("status", "--config", str(path))["targets"]
    assert target["replication"]["status"] == "ok"
    assert target["replica"] == "failure"
    assert target["replica_source"] == "backup"
    assert newest["backup_id"] in target["replica_reason"]
    assert target["replica_at"] > target["replication"]["checked_at"]


def test_replica_is_ok_when_both_agree(source_db: str, make_config: Any) -> None:
    _, path = make_config(source_db)
    backup(path)
    assert drsentry("run", "replication-check", "--config", str(path), "--json").returncode == 0

    (target,) = json_of("status", "--config", str(path))["targets"]

    assert (target["replica"], target["replication"]["status"]) == ("ok", "ok")
