"""What an operator reads in a terminal, in cron mail and in CI logs: tables that never cut a
backup id (the very value `restore` needs) at 80 or 100 columns or piped, a `status` that reads
whole words, `--version`, and `-v` wherever it is typed.

The CLI runs as a subprocess with its output piped, as cron and CI run it; COLUMNS is the
width a terminal would give (without it and without a terminal, the tables fit 80 columns).
"""

from __future__ import annotations

import importlib.metadata
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_process import run_cli

from drsentry.local.sample import create_sample_database, drop_database

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
# A name as long as real ones get: it must not push the backup id out of a narrow table.
FAILING_TARGET = "billing-reporting-eu"
# None: piped with no COLUMNS and no terminal anywhere, as under cron.
WIDTHS = [80, 100, None]


def drsentry(*args: str, columns: int | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, columns=columns)


@dataclass
class Catalog:
    config: Path

    def listed(self, *command: str) -> list[dict[str, Any]]:
        """What `COMMAND --json` lists now (other tests add verifications)."""
        shown = drsentry(*command, "--config", str(self.config), "--json")
        assert shown.returncode == 0, shown.stderr
        records: list[dict[str, Any]] = json.loads(shown.stdout)
        return records


@pytest.fixture(scope="module")
def catalog(aws_endpoint: str, pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Catalog]:
    """Two completed backups of `app` (verified, with a failing warning check) and two failed
    backups of a long-named target whose server does not answer."""
    from drsentry.adapters.aws import AwsClients
    from drsentry.core.config import dump_config, parse_config
    from drsentry.local.provision import provision

    admin_dsn = str(pg_server.dsn("postgres"))
    source_name = f"cols_{secrets.token_hex(3)}"
    source_dsn = create_sample_database(admin_dsn, source_name)
    suffix = secrets.token_hex(4)
    raw = {
        "storage": {"bucket": f"cols-primary-{suffix}", "region": REGION},
        "catalog": {"table": f"cols-catalog-{suffix}"},
        "notifications": {"sns_topic_arn": f"arn:aws:sns:{REGION}:123456789012:cols-alerts-{suffix}"},
        "targets": [
            {
                "name": "app",
                "dsn": source_dsn,
                "verify": {
                    "scratch_dsn": admin_dsn,
                    "critical_tables": ["organizations"],
                    "assertions": [
                        {"name": "invoices exported", "sql": "select false", "severity": "warning"}
                    ],
                },
            },
            {"name": FAILING_TARGET, "dsn": "postgresql://billing:pw@127.0.0.1:1/billing"},
        ],
    }
    config = parse_config(yaml.safe_dump(raw))
    provision(config, AwsClients(REGION), secret_values={})
    path = tmp_path_factory.mktemp("columns") / "drsentry.yaml"
    path.write_text(dump_config(config))
    for _ in range(2):
        backup = drsentry("run", "backup", "--config", str(path), "--json")
        assert backup.returncode == 1, backup.stderr  # the long-named target's backup fails
    verify = drsentry("run", "verify", "--config", str(path), "--target", "app", "--json")
    assert verify.returncode == 0, verify.stderr
    catalog = Catalog(path)
    backups = catalog.listed("backups", "list")
    assert sorted(record["status"] for record in backups) == ["completed", "completed", "failed", "failed"]
    assert [record["status"] for record in catalog.listed("verifications", "list")] == ["warning"]
    yield catalog
    drop_database(admin_dsn, source_name)


def assert_fits(text: str, columns: int | None) -> None:
    """No cell was cut short, and no line is wider than the terminal (80 when there is none)."""
    assert "…" not in text, text
    widest = max(len(line) for line in text.splitlines())
    assert widest <= (columns or 80), text


def lines_with(text: str, value: str, count: int = 1) -> list[str]:
    """The `count` lines that hold `value` whole."""
    lines = [line for line in text.splitlines() if value in line]
    assert len(lines) == count, f"{value!r} is not whole on {count} line(s):\n{text}"
    return lines


@pytest.mark.parametrize("columns", WIDTHS)
def test_backups_list_shows_every_backup_id_whole(catalog: Catalog, columns: int | None) -> None:
    # When the catalog is listed at this width
    listed = drsentry("backups", "list", "--config", str(catalog.config), columns=columns)

    # Then every backup id is there in full, beside its status, and nothing is cut off
    assert listed.returncode == 0, listed.stderr
    assert_fits(listed.stdout, columns)
    backups = catalog.listed("backups", "list")
    for record in backups:
        (line,) = lines_with(listed.stdout, record["backup_id"])
        assert record["status"] in line.split()
    # a failed backup's reason is still shown, word by word
    failed = next(record for record in backups if record["status"] == "failed")
    for word in failed["error"].split()[:4]:
        assert word in listed.stdout


@pytest.mark.parametrize("columns", WIDTHS)
def test_verifications_list_shows_every_backup_id_whole(catalog: Catalog, columns: int | None) -> None:
    # When the verification log is listed at this width
    listed = drsentry("verifications", "list", "--config", str(catalog.config), columns=columns)

    # Then the verified backup's id is there in full with its status, and the failed check is named
    assert listed.returncode == 0, listed.stderr
    assert_fits(listed.stdout, columns)
    verifications = catalog.listed("verifications", "list")
    for record in verifications:
        same_backup = sum(other["backup_id"] == record["backup_id"] for other in verifications)
        for line in lines_with(listed.stdout, record["backup_id"], count=same_backup):
            assert record["status"] in line.split()
    assert "invoices" in listed.stdout and "exported" in listed.stdout


@pytest.mark.parametrize("columns", WIDTHS)
def test_status_reads_whole_words_at_any_width(catalog: Catalog, columns: int | None) -> None:
    # When the status is shown at this width
    shown = drsentry("status", "--config", str(catalog.config), columns=columns)
    document = json.loads(drsentry("status", "--config", str(catalog.config), "--json").stdout)

    # Then each target's newest backup id, its tier, the verification's status and the last
    # run's outcome are whole words
    assert shown.returncode in (0, 1), shown.stderr
    assert_fits(shown.stdout, columns)
    app, billing = sorted(document["targets"], key=lambda item: item["target"] != "app")
    assert app["newest_backup"]["backup_id"] in shown.stdout
    for word in (app["newest_backup"]["tier"], "warning", "completed", "failed", FAILING_TARGET):
        assert word in shown.stdout.split() or f"{word}:" in shown.stdout.split(), word
    assert billing["newest_backup"] is None


def test_version_prints_the_installed_version() -> None:
    shown = drsentry("--version")

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == f"drsentry {importlib.metadata.version('drsentry')}\n"
    assert shown.stderr == ""


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_is_accepted_before_or_after_the_command(catalog: Catalog, where: str) -> None:
    # Given -v typed before the command or after it
    command = ["run", "verify", "--config", str(catalog.config), "--target", "app", "--json"]
    args = ["-v", *command] if where == "before" else [*command, "-v"]

    # When the command runs
    run = drsentry(*args)

    # Then it runs, and progress is logged to stderr while stdout stays one JSON document
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["verifications"][0]["target"] == "app"
    logged = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert any(entry["level"] == "INFO" for entry in logged), run.stderr


def test_without_verbose_no_progress_is_logged(catalog: Catalog) -> None:
    run = drsentry("run", "verify", "--config", str(catalog.config), "--target", "app", "--json")

    assert run.returncode == 0, run.stderr
    assert not [line for line in run.stderr.splitlines() if '"level":"INFO"' in line.replace(" ", "")]
