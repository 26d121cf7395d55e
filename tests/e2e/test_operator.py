"""The operator's commands as a person runs them at 3 a.m.: restore, drill, check, status.

The CLI runs in-process (typer's runner) against a real embedded PostgreSQL and moto's
server over HTTP. One configured stack with one verified backup is shared by the module;
a test that needs its own backup or configuration makes it.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import secrets
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from headless_chromium import WINDOW, chromium, rgb, screenshot, visible_facts
from psycopg import sql
from typer.testing import CliRunner

from drsentry.local.sample import create_sample_database, drop_database, with_dbname
from drsentry.operator.cli.app import app
from drsentry.operator.provenance import database_location, drsentry_version

pytestmark = pytest.mark.e2e

PRIMARY_REGION = "us-east-1"
REPLICA_REGION = "eu-west-1"


@dataclass
class Invocation:
    exit_code: int
    stdout: str
    stderr: str


def drsentry(*args: str) -> Invocation:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return Invocation(result.exit_code, result.stdout, result.stderr)


def write_config(directory: Path, clients: Any, source_dsn: str, admin_dsn: str, **verify: Any) -> Path:
    """A configuration whose buckets, table and topic exist on the moto server (as conftest's)."""
    from drsentry.core.config import dump_config, parse_config
    from drsentry.local.provision import provision

    suffix = secrets.token_hex(4)
    raw = {
        "rpo": "1h",
        "rto": "15m",
        "storage": {
            "bucket": f"op-primary-{suffix}",
            "region": PRIMARY_REGION,
            "replica": {"bucket": f"op-replica-{suffix}", "region": REPLICA_REGION, "mode": "copy"},
            "archive": {"bucket": f"op-archive-{suffix}", "storage_class": "DEEP_ARCHIVE"},
        },
        "catalog": {"table": f"op-catalog-{suffix}"},
        "notifications": {"sns_topic_arn": f"arn:aws:sns:{PRIMARY_REGION}:123456789012:op-alerts-{suffix}"},
        "targets": [
            {
                "name": "app",
                "dsn": source_dsn,
                "verify": {
                    "scratch_dsn": admin_dsn,
                    "critical_tables": ["organizations", "profiles", "appointments"],
                    "functions": ["book_appointment_with_lock"],
                    "rls_tables": ["profiles"],
                    **verify,
                },
            }
        ],
    }
    config = parse_config(yaml.safe_dump(raw))
    provision(config, clients, secret_values={})
    path = directory / f"drsentry-{suffix}.yaml"
    path.write_text(dump_config(config))
    return path


@dataclass
class Stack:
    config: Path
    admin_dsn: str
    source_dsn: str
    backup: dict[str, Any]


def catalog_record(config: Path, backup: dict[str, Any]) -> dict[str, Any]:
    """The whole catalog record (with per-table row counts) of a backup `run backup` reported."""
    listed = drsentry("backups", "list", "--config", str(config), "--json")
    assert listed.exit_code == 0, listed.stderr
    return next(record for record in json.loads(listed.stdout) if record["backup_id"] == backup["backup_id"])


@pytest.fixture(scope="module")
def stack(aws_endpoint: str, pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from drsentry.adapters.aws import AwsClients

    admin_dsn = str(pg_server.dsn("postgres"))
    source_name = f"opsrc_{secrets.token_hex(3)}"
    source_dsn = create_sample_database(admin_dsn, source_name)
    path = write_config(
        tmp_path_factory.mktemp("operator"), AwsClients(PRIMARY_REGION), source_dsn, admin_dsn
    )
    backup = drsentry("run", "backup", "--config", str(path), "--json")
    assert backup.exit_code == 0, backup.stderr
    verify = drsentry("run", "verify", "--config", str(path), "--json")
    assert verify.exit_code == 0, verify.stderr
    yield Stack(path, admin_dsn, source_dsn, catalog_record(path, json.loads(backup.stdout)["backups"][0]))
    drop_database(admin_dsn, source_name)


@pytest.fixture
def new_db(stack: Stack) -> Iterator[tuple[str, str]]:
    """A database name nobody has created yet, and its DSN; dropped afterwards."""
    name = f"restored_{secrets.token_hex(4)}"
    yield name, with_dbname(stack.admin_dsn, name)
    drop_database(stack.admin_dsn, name)


def counts(dsn: str) -> dict[str, int]:
    from drsentry.adapters.pgmeta import count_rows

    with psycopg.connect(dsn) as conn:
        conn.execute("set row_security = off")
        return count_rows(conn)


def create_empty(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create database {}").format(sql.Identifier(name)))


def error_line(invocation: Invocation) -> str:
    lines = invocation.stderr.strip().splitlines()
    assert len(lines) == 1, invocation.stderr
    assert "Traceback" not in invocation.stderr
    return lines[0]


# restore ----------------------------------------------------------------------------------


def test_restore_of_a_whole_backup_gives_the_backups_row_counts(
    stack: Stack, new_db: tuple[str, str]
) -> None:
    # Given a verified backup and a database name that does not exist yet
    name, dsn = new_db

    # When it is restored there without a prompt
    run = drsentry("restore", stack.backup["backup_id"], "--to", dsn, "--yes", "--config", str(stack.config))

    # Then the database was created and every table holds the backup record's row count
    assert run.exit_code == 0, run.stderr
    assert counts(dsn) == stack.backup["tables"]
    assert f"restored {stack.backup['backup_id']}" in run.stdout
    assert "restored rows" in run.stdout
    for table, rows in stack.backup["tables"].items():
        assert re.search(rf"{table}\s.*\b{rows:,}\b", run.stdout), table

    # And a second restore into the now non-empty database is refused without --clean ...
    again = drsentry(
        "restore", stack.backup["backup_id"], "--to", dsn, "--yes", "--config", str(stack.config)
    )
    assert again.exit_code == 2
    assert "is not empty" in error_line(again) and "--clean" in error_line(again)

    # ... and with --clean replaces every object, giving the same counts
    clean = drsentry(
        "restore", stack.backup["backup_id"], "--to", dsn, "--clean", "--yes", "--config", str(stack.config)
    )
    assert clean.exit_code == 0, clean.stderr
    assert counts(dsn) == stack.backup["tables"]


def test_restore_of_one_table_brings_back_only_that_table(stack: Stack, new_db: tuple[str, str]) -> None:
    name, dsn = new_db
    create_empty(stack.admin_dsn, name)

    run = drsentry(
        "restore", stack.backup["backup_id"], "--to", dsn, "--table", "organizations", "--yes",
        "--config", str(stack.config),
    )  # fmt: skip

    assert run.exit_code == 0, run.stderr
    assert counts(dsn) == {"organizations": stack.backup["tables"]["organizations"]}


def test_parallel_restore_gives_the_backups_row_counts(stack: Stack, new_db: tuple[str, str]) -> None:
    _, dsn = new_db
    run = drsentry(
        "restore",
        stack.backup["backup_id"],
        "--to",
        dsn,
        "--jobs",
        "3",
        "--yes",
        "--config",
        str(stack.config),
    )
    assert run.exit_code == 0, run.stderr
    assert counts(dsn) == stack.backup["tables"]


def test_non_empty_target_is_refused_and_left_alone(stack: Stack, new_db: tuple[str, str]) -> None:
    # Given a database that holds someone's table
    name, dsn = new_db
    create_empty(stack.admin_dsn, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("create table precious (id int); insert into precious values (1)")

    # When a restore is aimed at it without --clean
    run = drsentry("restore", stack.backup["backup_id"], "--to", dsn, "--yes", "--config", str(stack.config))

    # Then it is refused with one line naming the database, and nothing changed
    assert run.exit_code == 2
    line = error_line(run)
    assert f"/{name} is not empty (1 tables)" in line
    assert counts(dsn) == {"precious": 1}


@pytest.mark.parametrize(
    ("backup_id", "message"),
    [
        ("yesterday", "malformed backup id 'yesterday'"),
        ("20991231T235959999Z-00000000", "backup 20991231T235959999Z-00000000 not found"),
    ],
)
def test_malformed_or_unknown_backup_id_exits_2_with_one_line(
    stack: Stack, new_db: tuple[str, str], backup_id: str, message: str
) -> None:
    run = drsentry("restore", backup_id, "--to", new_db[1], "--yes", "--config", str(stack.config))
    assert run.exit_code == 2
    assert message in error_line(run)
    assert run.stdout == ""


def test_restore_over_the_source_database_needs_the_flag(stack: Stack) -> None:
    # Without the flag: refused, naming the flag
    run = drsentry(
        "restore", stack.backup["backup_id"], "--to", stack.source_dsn, "--yes", "--config", str(stack.config)
    )
    assert run.exit_code == 2
    line = error_line(run)
    assert "is the source database of target 'app'" in line
    assert "--i-know-this-is-the-source" in line

    # With it: past that rule, and still refused because the source is not empty (no --clean)
    flagged = drsentry(
        "restore", stack.backup["backup_id"], "--to", stack.source_dsn, "--yes",
        "--i-know-this-is-the-source", "--config", str(stack.config),
    )  # fmt: skip
    assert flagged.exit_code == 2
    assert "is not empty" in error_line(flagged)


def test_restore_without_a_terminal_needs_yes(stack: Stack, new_db: tuple[str, str]) -> None:
    run = drsentry("restore", stack.backup["backup_id"], "--to", new_db[1], "--config", str(stack.config))
    assert run.exit_code == 2
    assert "pass --yes" in error_line(run)
    assert not _database_exists(stack.admin_dsn, new_db[0])


def _database_exists(admin_dsn: str, name: str) -> bool:
    with psycopg.connect(admin_dsn) as conn:
        return conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone() is not None


@pytest.mark.parametrize("mode", [[], ["--jobs", "2"]], ids=["stream", "file"])
def test_checksum_mismatch_exits_1_and_restores_nothing(
    stack: Stack, new_db: tuple[str, str], mode: list[str]
) -> None:
    # Given a backup whose object was overwritten by another, perfectly readable, backup
    from drsentry.adapters.aws import AwsClients

    taken = drsentry("run", "backup", "--config", str(stack.config), "--json")
    assert taken.exit_code == 0, taken.stderr
    victim = json.loads(taken.stdout)["backups"][0]
    s3 = AwsClients(PRIMARY_REGION).s3()
    other = s3.get_object(Bucket=stack.backup["bucket"], Key=stack.backup["key"])["Body"].read()
    s3.put_object(Bucket=victim["bucket"], Key=victim["key"], Body=other)
    name, dsn = new_db
    create_empty(stack.admin_dsn, name)

    # When it is restored
    run = drsentry("restore", victim["backup_id"], "--to", dsn, "--yes", *mode, "--config", str(stack.config))

    # Then the SHA-256 check fails it, nothing is claimed, and nothing was committed
    assert run.exit_code == 1
    line = error_line(run)
    assert f"differs from the catalog's {victim['sha256']}" in line
    assert "nothing was restored" in line
    assert "restored rows" not in run.stdout
    assert counts(dsn) == {}


def test_masked_restore_leaves_no_original_pii(stack: Stack, new_db: tuple[str, str], tmp_path: Path) -> None:
    # Given masking rules for the sample's people and sessions
    rules = tmp_path / "mask.yaml"
    rules.write_text(
        "tables:\n"
        "  profiles:\n"
        "    columns: {email: email, phone: phone, full_name: name}\n"
        "  sessions: truncate\n"
    )
    with psycopg.connect(stack.source_dsn) as conn:
        conn.execute("set row_security = off")
        originals = conn.execute("select id, email, phone, full_name from profiles").fetchall()
    name, dsn = new_db

    # When the backup is restored with them
    run = drsentry(
        "restore", stack.backup["backup_id"], "--to", dsn, "--mask", str(rules), "--yes",
        "--config", str(stack.config),
    )  # fmt: skip

    # Then no original email, phone or name is in the restored database, sessions are empty,
    # every profile is still there, and the proof was reported
    assert run.exit_code == 0, run.stderr
    with psycopg.connect(dsn) as conn:
        conn.execute("set row_security = off")
        masked = conn.execute("select id, email, phone, full_name from profiles").fetchall()
        sessions = conn.execute("select count(*) from sessions").fetchone()
    assert len(masked) == len(originals) == stack.backup["tables"]["profiles"]
    for column in (1, 2, 3):
        assert not {row[column] for row in originals} & {row[column] for row in masked}
    profile_id, email, phone, full_name = masked[0]
    assert (email, phone, full_name) == (
        f"test-{profile_id}@example.com",
        f"+1000000{profile_id}",
        f"Test Customer {profile_id}",
    )
    assert sessions == (0,)
    assert "masking proven" in run.stdout
    # And no private database with unmasked rows is left behind
    with psycopg.connect(stack.admin_dsn) as conn:
        leftovers = conn.execute("select datname from pg_database where datname like 'drsentry\\_mask\\_%'")
        assert leftovers.fetchall() == []


def test_masking_that_leaves_originals_fails_and_hands_nothing_over(
    stack: Stack, new_db: tuple[str, str], tmp_path: Path
) -> None:
    # Given a rule that writes back what the sample already holds (full_name is 'Person ' || id)
    rules = tmp_path / "mask.yaml"
    rules.write_text("tables:\n  profiles:\n    columns: {email: email, full_name: 'Person {id}'}\n")
    name, dsn = new_db

    run = drsentry(
        "restore", stack.backup["backup_id"], "--to", dsn, "--mask", str(rules), "--yes",
        "--config", str(stack.config),
    )  # fmt: skip

    # Then the proof catches it, and neither the target nor a private copy is left
    assert run.exit_code == 1
    assert "profiles.full_name: 2,000 value(s) still equal an original value" in error_line(run)
    assert not _database_exists(stack.admin_dsn, name)
    with psycopg.connect(stack.admin_dsn) as conn:
        leftovers = conn.execute("select datname from pg_database where datname like 'drsentry\\_mask\\_%'")
        assert leftovers.fetchall() == []


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        (
            "tables: {profiles: {columns: {emial: email}}}",
            "tables.profiles.columns.emial: profiles in backup {backup_id} has no column emial "
            "(did you mean email?)",
        ),
        (
            "tables: {profles: {columns: {email: email}}, sessions: truncate}",
            "tables.profles: backup {backup_id} has no table profles (did you mean profiles?)",
        ),
        (
            "tables: {profiles: {key: profile_id, columns: {email: email}}}",
            "tables.profiles.key: profiles in backup {backup_id} has no column profile_id",
        ),
        (
            "tables: {profiles: {columns: {organization_id: name}}}",
            "tables.profiles.columns.organization_id: a template writes text, the column is bigint",
        ),
    ],
    ids=["column", "table", "key", "type"],
)
def test_a_typo_in_the_mask_rules_exits_2_before_anything_is_restored(
    stack: Stack, new_db: tuple[str, str], tmp_path: Path, rules: str, named: str
) -> None:
    # Given rules with one mistake, and an empty target database
    rules_file = tmp_path / "mask.yaml"
    rules_file.write_text(rules + "\n")
    name, dsn = new_db
    create_empty(stack.admin_dsn, name)

    # When the backup is restored with them
    run = drsentry(
        "restore", stack.backup["backup_id"], "--to", dsn, "--mask", str(rules_file), "--yes",
        "--config", str(stack.config),
    )  # fmt: skip

    # Then it is bad input, one line naming the rule, and nothing was restored anywhere
    assert run.exit_code == 2
    assert error_line(run).startswith(
        f"error: {rules_file}: {named.format(backup_id=stack.backup['backup_id'])}"
    )
    assert "restored rows" not in run.stdout
    assert counts(dsn) == {}
    with psycopg.connect(stack.admin_dsn) as conn:
        leftovers = conn.execute("select datname from pg_database where datname like 'drsentry\\_mask\\_%'")
        assert leftovers.fetchall() == []


# drill ------------------------------------------------------------------------------------


def _verification(stack_config: Path, verification_id: str) -> dict[str, Any]:
    listed = drsentry("verifications", "list", "--config", str(stack_config), "--json")
    assert listed.exit_code == 0, listed.stderr
    return next(record for record in json.loads(listed.stdout) if record["id"] == verification_id)


def read_back(pattern: str, text: str) -> tuple[str, ...]:
    match = re.search(pattern, text)
    assert match, pattern
    return match.groups()


def test_drill_writes_a_markdown_report_with_the_right_numbers(stack: Stack, tmp_path: Path) -> None:
    report = tmp_path / "drill.md"

    run = drsentry("drill", "--config", str(stack.config), "--report", str(report), "--json")

    assert run.exit_code == 0, run.stderr
    result = json.loads(run.stdout)
    verification = _verification(stack.config, result["verification_id"])
    text = report.read_text()
    assert read_back(r"\| Drill status \| \*\*(PASS|FAIL)\*\* \|", text) == ("PASS",)
    passed, total = map(int, read_back(r"\| Checks passed \| (\d+)/(\d+) \|", text))
    assert (passed, total) == (
        verification["checks_passed"],
        verification["checks_passed"] + verification["checks_failed"],
    )
    assert f"`{result['backup_id']}`" in text
    assert re.search(r"\| RTO \| [\d.]+ s \| 15 min \| met \|", text)
    # the module's backup came before the drill, so the RPO was measured against it
    assert re.search(r"\| RPO \| [\d.]+ (s|min)[^|]* \| 1 h \| met \|", text)
    assert "## Last " in text and "verifications (oldest first)" in text
    # a dated title, what to do next, and the run's context for an auditor
    assert text.startswith(f"# DR drill report, app, {result['started_at'][:10]}\n")
    assert "\n## Recommendations\n" in text
    digest = hashlib.sha256(stack.config.read_bytes()).hexdigest()
    for line in (
        f"- Source database: `{database_location(stack.source_dsn)}`",
        f"- drsentry version: `{drsentry_version()}`",
        f"- Run by: `{getpass.getuser()} on {socket.gethostname()}`",
        f"- Configuration: `sha256:{digest} of {stack.config.name}`",
    ):
        assert line in text
    assert psycopg.conninfo.conninfo_to_dict(stack.source_dsn)["password"] not in text


def test_failed_drill_exits_1_and_its_html_report_says_why(
    stack: Stack, clients: Any, tmp_path: Path
) -> None:
    # Given a target whose verification demands a table the database does not have
    config = write_config(
        tmp_path, clients, stack.source_dsn, stack.admin_dsn, critical_tables=["organizations", "invoices"]
    )
    report = tmp_path / "drill.html"

    run = drsentry("drill", "--config", str(config), "--report", str(report), "--json")

    assert run.exit_code == 1
    result = json.loads(run.stdout)
    verification = _verification(config, result["verification_id"])
    html = report.read_text()

    def field(name: str) -> str:
        match = re.search(rf'data-field="{name}"[^>]*>([^<]*)<', html)
        assert match, name
        return match.group(1)

    assert field("status") == "FAIL"
    assert field("checks") == f"{verification['checks_passed']}/{verification['checks_passed'] + 1}"
    assert verification["checks_failed"] == 1
    assert "critical check failed: critical tables: missing: invoices" in html
    assert html.count("<svg") == 2 and "<script" not in html


def test_a_passing_drill_report_reads_well_in_a_browser(stack: Stack, tmp_path: Path) -> None:
    # Given Chromium, and a target verified before (so the charts have at least two points)
    chromium()
    report = tmp_path / "drill.html"

    # When a drill passes and its HTML report is opened in Chromium
    run = drsentry("drill", "--config", str(stack.config), "--report", str(report), "--json")
    assert run.exit_code == 0, run.stderr
    result = json.loads(run.stdout)
    assert len(result["history"]) >= 2
    facts = visible_facts(report)

    # Then it reads PASS in green with no red card, and each chart's first and last x labels
    # differ and do not overlap
    assert facts["title"] == f"DR drill report, app, {result['started_at'][:10]}: PASS"
    assert facts["status"] == {"text": "PASS", "background": rgb("#1f9d55")}
    assert not [card["label"] for card in facts["cards"] if card["value_colour"] == rgb("#d63c3c")]
    assert len(facts["x_labels"]) == 2
    for first, last in facts["x_labels"]:
        assert first["text"] != last["text"]
        assert first["right"] < last["left"]
    # the page fits its window, and a person can look at it
    assert facts["overflowing"] == [] and facts["page_width"] <= facts["viewport_width"]
    assert "Recommendations" in facts["text"] and "Details and run context" in facts["text"]
    assert screenshot(report, tmp_path / "drill.png") == WINDOW


# check and status ------------------------------------------------------------------------


def test_check_passes_on_a_healthy_stack(stack: Stack) -> None:
    run = drsentry("check", "--config", str(stack.config))
    assert run.exit_code == 0, run.stdout
    lines = run.stdout.strip().splitlines()
    assert lines[-1].startswith("READY")
    assert not [line for line in lines if line.startswith("FAIL")]
    for name in (
        "config",
        "pg tools",
        "connectivity [app]",
        "primary bucket",
        "archive object lock",
        "topic",
    ):
        assert any(line.startswith("PASS") and f"  {name}" in line for line in lines), name


def test_check_reports_a_missing_bucket_as_fail(stack: Stack, tmp_path: Path) -> None:
    # Given a configuration naming a primary bucket that does not exist
    raw = yaml.safe_load(stack.config.read_text())
    raw["storage"]["bucket"] = "nobody-made-this-bucket"
    broken = tmp_path / "drsentry.yaml"
    broken.write_text(yaml.safe_dump(raw))

    run = drsentry("check", "--config", str(broken), "--json")

    assert run.exit_code == 1
    result = json.loads(run.stdout)
    assert result["ready"] is False
    failed = [check for check in result["checks"] if check["status"] == "fail"]
    assert failed == [
        {
            "name": "primary bucket",
            "status": "fail",
            "detail": "the primary bucket nobody-made-this-bucket does not exist",
            "target": None,
        }
    ]


def test_status_json_has_the_operator_keys(stack: Stack) -> None:
    run = drsentry("status", "--config", str(stack.config), "--json")
    assert run.exit_code == 0, run.stderr
    (target,) = json.loads(run.stdout)["targets"]
    assert target["rpo_level"] == "green"
    assert 0 <= target["rpo_used"] < 0.8
    assert target["verification_status"] == "success"
    assert target["failing_checks"] == []
    assert target["archived_backups"] == 0
    assert "replication" in target
    # the keys scripts already read are still there
    for key in (
        "newest_backup",
        "newest_backup_age_seconds",
        "rpo_state",
        "newest_verification",
        "rto_state",
    ):
        assert key in target


def test_each_operator_command_has_help_with_an_example() -> None:
    for command in ("restore", "drill", "check", "status"):
        run = drsentry(command, "--help")
        assert run.exit_code == 0
        assert f"Example: drsentry {command}" in run.stdout


def test_backup_whose_primary_copy_is_gone_is_restored_from_the_archive(
    stack: Stack, clients: Any, tmp_path: Path, new_db: tuple[str, str]
) -> None:
    # Given a backup copied to the archive bucket (Deep Archive), whose primary copy is gone
    config = write_config(tmp_path, clients, stack.source_dsn, stack.admin_dsn)
    taken = drsentry("run", "backup", "--config", str(config), "--json")
    assert taken.exit_code == 0, taken.stderr
    backup = catalog_record(config, json.loads(taken.stdout)["backups"][0])
    archived = drsentry("run", "archive", "--config", str(config), "--json")
    assert archived.exit_code == 0, archived.stdout
    clients.s3().delete_object(Bucket=backup["bucket"], Key=backup["key"])
    _, dsn = new_db

    # When it is restored: the operator is told it is archived and that a restore was requested
    first = drsentry("restore", backup["backup_id"], "--to", dsn, "--yes", "--config", str(config))
    assert first.exit_code == 1
    line = error_line(first)
    assert "archived in DEEP_ARCHIVE" in line and "restore requested" in line
    assert "InvalidObjectState" not in line

    # Then, once S3 has restored the archive copy, the same command restores the backup from it
    second = drsentry("restore", backup["backup_id"], "--to", dsn, "--yes", "--config", str(config))
    assert second.exit_code == 0, second.stderr
    assert "archive copy" in second.stdout
    assert counts(dsn) == backup["tables"]
