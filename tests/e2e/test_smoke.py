"""Smoke checks after a restore, as an operator runs them: `drsentry drill --smoke` and
`drsentry restore --smoke`, against a small HTTP server the test starts on 127.0.0.1
(/health answers 200, /private 401, /slow after 2.5 s) and the restored database.

One configured stack with one backup is shared by the module; each test writes its own
variant of the configuration (same buckets and catalog, other smoke checks).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from headless_chromium import WINDOW, chromium, rgb, screenshot, visible_facts
from typer.testing import CliRunner

# Imported before any CliRunner swaps stderr: Powertools' Logger keeps the stream it was created with.
import drsentry.core.observability  # noqa: F401
from drsentry.core.config import SmokeCheck, dump_config, parse_config
from drsentry.local.sample import create_sample_database, drop_database, with_dbname
from drsentry.operator.cli.app import app
from drsentry.operator.provenance import database_location, drsentry_version
from drsentry.operator.smoke import run_http_check

pytestmark = pytest.mark.e2e

REGION = "us-east-1"
SLOW_SECONDS = 2.5


class AppHandler(BaseHTTPRequestHandler):
    """The restored application, as far as smoke checks can tell."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/slow":
            time.sleep(SLOW_SECONDS)
        status = {"/health": 200, "/private": 401, "/slow": 200}.get(path, 404)
        body = json.dumps({"path": path}).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # a client that gave up waiting (the slowness test) is not the server's problem

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def app_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), AppHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="smoke-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Stack:
    directory: Path
    raw: dict[str, Any]
    admin_dsn: str
    backup_id: str

    def config(self, smoke: list[dict[str, Any]]) -> Path:
        """The stack's configuration with these smoke checks (no new AWS resources needed)."""
        raw = json.loads(json.dumps(self.raw))
        raw["targets"][0]["smoke"] = smoke
        path = self.directory / f"drsentry-{secrets.token_hex(4)}.yaml"
        path.write_text(dump_config(parse_config(yaml.safe_dump(raw))))
        return path


@dataclass
class Invocation:
    exit_code: int
    stdout: str
    stderr: str


def drsentry(*args: str) -> Invocation:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return Invocation(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="module")
def stack(aws_endpoint: str, pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from drsentry.adapters.aws import AwsClients
    from drsentry.local.provision import provision

    admin_dsn = str(pg_server.dsn("postgres"))
    source_name = f"smoke_{secrets.token_hex(3)}"
    source_dsn = create_sample_database(admin_dsn, source_name)
    suffix = secrets.token_hex(4)
    raw: dict[str, Any] = {
        "storage": {"bucket": f"smoke-primary-{suffix}", "region": REGION},
        "catalog": {"table": f"smoke-catalog-{suffix}"},
        "notifications": {"sns_topic_arn": f"arn:aws:sns:{REGION}:123456789012:smoke-alerts-{suffix}"},
        "targets": [
            {
                "name": "app",
                "dsn": source_dsn,
                "verify": {"scratch_dsn": admin_dsn, "critical_tables": ["organizations"]},
            }
        ],
    }
    provision(parse_config(yaml.safe_dump(raw)), AwsClients(REGION), secret_values={})
    stack = Stack(tmp_path_factory.mktemp("smoke"), raw, admin_dsn, backup_id="")
    backup = drsentry("run", "backup", "--config", str(stack.config([])), "--json")
    assert backup.exit_code == 0, backup.stderr
    stack.backup_id = json.loads(backup.stdout)["backups"][0]["backup_id"]
    yield stack
    drop_database(admin_dsn, source_name)


@pytest.fixture
def new_db(stack: Stack) -> Iterator[str]:
    name = f"smoked_{secrets.token_hex(4)}"
    yield with_dbname(stack.admin_dsn, name)
    drop_database(stack.admin_dsn, name)


def passing_checks(app_url: str) -> list[dict[str, Any]]:
    return [
        {"name": "health", "url": f"{app_url}/health"},
        {"name": "auth required", "url": f"{app_url}/private", "expect_status": [401, 403]},
        {
            "name": "organizations restored",
            "sql": "select count(*) > 0 from organizations",
            "max_seconds": 10,
        },
    ]


# drill --smoke ---------------------------------------------------------------------------------


def test_drill_with_smoke_checks_passes_and_reports_them(stack: Stack, app_url: str, tmp_path: Path) -> None:
    # Given an application that answers as it should and a restored database with rows
    config = stack.config(passing_checks(app_url))
    report = tmp_path / "drill.md"

    # When the drill runs with --smoke
    result = drsentry("drill", "--config", str(config), "--smoke", "--report", str(report))

    # Then it passes, and the report lists every smoke check as passed
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "smoke checks    3/3 passed" in result.stdout
    text = report.read_text()
    assert "| Drill status | **PASS** |" in text
    assert "| Smoke checks passed | 3/3 | | passed |" in text
    rows = [line for line in text.splitlines() if line.startswith("| health |") or line.startswith("| auth")]
    assert len(rows) == 2 and all("| passed |" in row for row in rows)
    assert re.search(
        r"\| organizations restored \| sql \| `\S+@127\.0\.0\.1:\d+/drsentry_verify_\w+` \| passed", text
    )
    assert "answered 401 in" in text


@dataclass
class Drill:
    run: Invocation
    config: Path
    report: Path


@pytest.fixture(scope="module")
def failed_smoke_drill(stack: Stack, app_url: str, tmp_path_factory: pytest.TempPathFactory) -> Drill:
    # Given a smoke check whose query finds nothing in the restored database
    checks = [*passing_checks(app_url), {"name": "no orgs", "sql": "select count(*) = 0 from organizations"}]
    config = stack.config(checks)
    report = tmp_path_factory.mktemp("failed-drill") / "drill.html"

    # When the drill runs with --smoke
    run = drsentry("drill", "--config", str(config), "--smoke", "--report", str(report), "--json")
    return Drill(run, config, report)


def test_drill_fails_when_a_smoke_check_fails_and_the_html_report_says_which(
    failed_smoke_drill: Drill,
) -> None:
    result = failed_smoke_drill.run

    # Then the drill fails on that check alone, and both outputs say so
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["status"] == "FAIL" and document["verification_status"] != "failure"
    assert [(s["name"], s["status"]) for s in document["smoke"]] == [
        ("health", "passed"),
        ("auth required", "passed"),
        ("organizations restored", "passed"),
        ("no orgs", "failed"),
    ]
    assert "smoke check failed: no orgs: returned false" in document["issues"]
    html = failed_smoke_drill.report.read_text()
    assert '<span data-field="smoke">3/4</span>' in html
    assert '<div class="status FAIL" data-field="status">FAIL</div>' in html
    # the checks card counts the smoke checks, and is the one card marked failed
    passed, total = document["checks_passed"] + 3, document["checks_total"] + 4
    assert f'<div class="value" data-field="checks">{passed}/{total}</div>' in html
    assert re.findall(r'<div class="card kpi failed" data-card="([^"]+)">', html) == ["checks"]
    assert any(
        advice.startswith("Smoke check 'no orgs' failed on the restored copy (returned false)")
        for advice in document["recommendations"]
    )


def test_a_failed_drill_report_shows_the_failure_in_a_browser(
    failed_smoke_drill: Drill, stack: Stack, tmp_path: Path
) -> None:
    chromium()
    document = json.loads(failed_smoke_drill.run.stdout)

    # When the HTML report is opened in Chromium
    facts = visible_facts(failed_smoke_drill.report)

    # Then the verdict, the title and the cards agree: FAIL in red, and the checks card (smoke
    # checks counted) is the only red one
    assert facts["title"] == f"DR drill report, app, {document['started_at'][:10]}: FAIL"
    assert facts["status"] == {"text": "FAIL", "background": rgb("#d63c3c")}
    cards = {card["label"]: card for card in facts["cards"]}
    checks = cards["CHECKS PASSED"]
    assert checks["value"] == f"{document['checks_passed'] + 3}/{document['checks_total'] + 4}"
    assert "smoke 3/4" in checks["hint"]
    red = [label for label, card in cards.items() if card["value_colour"] == rgb("#d63c3c")]
    assert red == ["CHECKS PASSED"] and checks["edge_colour"] == rgb("#d63c3c")
    # what failed, what to do about it, and the run's context are on the page
    text = facts["text"]
    assert "Smoke checks (3/4 passed, failed)" in text
    assert "Recommendations\nSmoke check 'no orgs' failed on the restored copy (returned false)" in text
    config_digest = hashlib.sha256(failed_smoke_drill.config.read_bytes()).hexdigest()
    for name, value in (
        ("Source database", database_location(stack.raw["targets"][0]["dsn"])),
        ("drsentry version", drsentry_version()),
        ("Run by", f"{getpass.getuser()} on {socket.gethostname()}"),
        ("Configuration", f"sha256:{config_digest} of {failed_smoke_drill.config.name}"),
    ):
        assert f"{name}\n{value}\n" in text, name
    # and nothing is wider than its card or the window
    assert facts["overflowing"] == [] and facts["page_width"] <= facts["viewport_width"]
    assert screenshot(failed_smoke_drill.report, tmp_path / "drill.png") == WINDOW


def test_drill_smoke_without_smoke_checks_is_bad_usage(stack: Stack) -> None:
    result = drsentry("drill", "--config", str(stack.config([])), "--smoke")
    assert result.exit_code == 2
    assert "target 'app' has no smoke checks configured" in result.stderr


# restore --smoke -------------------------------------------------------------------------------


def test_restore_smoke_checks_pass_after_a_real_restore(stack: Stack, app_url: str, new_db: str) -> None:
    # When a backup is restored with --smoke
    result = drsentry(
        "restore", stack.backup_id, "--to", new_db, "--yes", "--smoke", "--config",
        str(stack.config(passing_checks(app_url))),
    )  # fmt: skip

    # Then the restore output ends with every smoke check passed, the SQL one on the restored database
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "smoke checks: 3/3 passed" in result.stdout
    assert re.search(r"PASS  organizations restored \(sql \S+@127\.0\.0\.1:\d+/smoked_\w+, ", result.stdout)
    assert re.search(
        r"PASS  auth required \(http http://127\.0\.0\.1:\d+/private, .*\): answered 401", result.stdout
    )


def test_restore_smoke_fails_on_a_wrong_status(stack: Stack, app_url: str, new_db: str) -> None:
    # Given an endpoint that should need a login but is configured to expect 200
    checks = [{"name": "auth required", "url": f"{app_url}/private", "expect_status": 200}]

    # When a backup is restored with --smoke
    result = drsentry(
        "restore", stack.backup_id, "--to", new_db, "--yes", "--smoke", "--config", str(stack.config(checks))
    )

    # Then the restore itself succeeded, but the command fails naming the check and the status
    assert result.exit_code == 1
    assert "restored" in result.stdout
    assert "FAIL  auth required" in result.stdout and "answered 401, expected 200" in result.stdout
    assert result.stderr.strip().splitlines()[-1] == "error: smoke checks failed: auth required"


def test_restore_smoke_fails_on_slowness(stack: Stack, app_url: str, new_db: str) -> None:
    # Given an endpoint that answers after 2.5 s and the seeds' limit of 2 s
    checks = [{"name": "slow page", "url": f"{app_url}/slow", "max_seconds": 2}]

    # When a backup is restored with --smoke
    result = drsentry(
        "restore", stack.backup_id, "--to", new_db, "--yes", "--smoke", "--config", str(stack.config(checks))
    )

    # Then the check fails on time, and the command with it
    assert result.exit_code == 1
    assert re.search(
        r"FAIL  slow page \(http \S+/slow, 2\.\d\ds of 2s\): no response within 2s", result.stdout
    )
    assert "error: smoke checks failed: slow page" in result.stderr


def test_reports_never_show_a_urls_query_string(app_url: str) -> None:
    # Given a health URL that carries a token in its query string
    check = SmokeCheck(name="health", url=f"{app_url}/health?token=s3cret-token")

    # When it runs
    result = run_http_check(check)

    # Then it passes, and what reports show of the URL has no token
    assert result.status == "passed", result.detail
    assert result.target == f"{app_url}/health?…"
    assert "s3cret" not in result.model_dump_json()
