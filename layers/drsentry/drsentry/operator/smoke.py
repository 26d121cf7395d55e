"""Smoke checks after a restore (`drsentry drill --smoke`, `drsentry restore --smoke`).

The seeds' drill ended with a table of them: the health endpoint answers 200, an endpoint
that needs a login answers 401/403, every answer comes within 2 s. Each configured check is
either an HTTP GET (passes when the status is one of ``expect_status`` and the whole
response arrived within ``max_seconds``) or one SQL statement on the restored database
(passes when it returns a single true, in a read-only transaction whose statement timeout
is ``max_seconds``).

Redirects are not followed: an application that sends an anonymous user to its login page
answers 302, and that is the status to expect, not the login page's 200.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from pydantic import BaseModel

from drsentry.adapters.secrets import redact, sanitize
from drsentry.core.config import SmokeCheck
from drsentry.core.observability import logger
from drsentry.jobs.verify.rules import evaluate_assertion

USER_AGENT = "drsentry-smoke/1"
# Enough of a body to know the response finished for a health page, never a whole download.
BODY_LIMIT = 256 * 1024
CONNECT_TIMEOUT_SECONDS = 15
APPLICATION_NAME = "drsentry-smoke"

SmokeStatus = Literal["passed", "failed"]


class SmokeResult(BaseModel):
    name: str
    kind: Literal["http", "sql"]
    # The URL without credentials or query string, or the restored database (user@host:port/db).
    target: str
    status: SmokeStatus
    seconds: float
    max_seconds: float
    detail: str


def display_url(url: str) -> str:
    """scheme://host/path: userinfo and query strings may hold tokens, so reports never show them."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path or "/", "…" if parts.query else "", ""))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None  # urllib then raises HTTPError with the 3xx status, which is what we judge


def run_http_check(check: SmokeCheck) -> SmokeResult:
    assert check.url is not None
    shown = display_url(check.url)
    expected = check.expected_statuses
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(check.url, method="GET", headers={"User-Agent": USER_AGENT})
    started = time.monotonic()
    status: int | None = None
    problem = ""
    try:
        # The timeout bounds every socket wait; the total is judged below.
        with opener.open(request, timeout=check.max_seconds) as response:
            response.read(BODY_LIMIT)
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = int(exc.code)
        exc.close()
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            problem = f"no response within {check.max_seconds:g}s"
        else:
            problem = f"unreachable: {reason}"
    except TimeoutError:
        problem = f"no response within {check.max_seconds:g}s"
    except (http.client.HTTPException, OSError) as exc:
        problem = f"connection failed: {type(exc).__name__}: {exc}"
    seconds = time.monotonic() - started
    expect_text = " or ".join(str(code) for code in expected)
    if problem:
        outcome: SmokeStatus = "failed"
        detail = f"{problem}; expected {expect_text}"
    elif status not in expected:
        outcome, detail = "failed", f"answered {status}, expected {expect_text} ({seconds:.2f}s)"
    elif seconds > check.max_seconds:
        outcome = "failed"
        detail = f"answered {status} but took {seconds:.2f}s, more than {check.max_seconds:g}s"
    else:
        outcome, detail = "passed", f"answered {status} in {seconds:.2f}s (limit {check.max_seconds:g}s)"
    return SmokeResult(
        name=check.name,
        kind="http",
        target=shown,
        status=outcome,
        seconds=round(seconds, 3),
        max_seconds=check.max_seconds,
        detail=detail,
    )


def run_sql_check(check: SmokeCheck, dsn: str) -> SmokeResult:
    assert check.sql is not None
    started = time.monotonic()
    timeout_ms = max(int(check.max_seconds * 1000), 1)
    why_not: str | None
    try:
        with psycopg.connect(
            dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name=APPLICATION_NAME
        ) as conn:
            with conn.transaction(force_rollback=True):
                conn.execute("set transaction read only")
                conn.execute(sql.SQL("set local statement_timeout = {}").format(sql.Literal(timeout_ms)))
                # Binary results force the extended protocol, which takes exactly one statement.
                cursor = conn.execute(sql.SQL(check.sql), binary=True)
                rows = cursor.fetchall() if cursor.description else []
            why_not = evaluate_assertion(rows)
    except psycopg.errors.QueryCanceled:
        why_not = f"timed out after {check.max_seconds:g}s (statement_timeout)"
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        why_not = f"error: {sanitize(first, dsn)}"
    seconds = time.monotonic() - started
    if why_not is None and seconds > check.max_seconds:
        why_not = f"returned true but took {seconds:.2f}s, more than {check.max_seconds:g}s"
    return SmokeResult(
        name=check.name,
        kind="sql",
        target=redact(dsn),
        status="passed" if why_not is None else "failed",
        seconds=round(seconds, 3),
        max_seconds=check.max_seconds,
        detail=f"returned true in {seconds:.2f}s" if why_not is None else why_not,
    )


def run_smoke_checks(checks: Sequence[SmokeCheck], restored_dsn: str) -> list[SmokeResult]:
    """Every check, in the configured order; never raises for what a check finds."""
    results = []
    for check in checks:
        result = run_sql_check(check, restored_dsn) if check.kind == "sql" else run_http_check(check)
        log = logger.info if result.status == "passed" else logger.warning
        # `name` is a LogRecord attribute: the check's name goes under `check`.
        log("smoke check", extra={"check": result.name, **result.model_dump(exclude={"name"})})
        results.append(result)
    return results


def smoke_failures(results: Sequence[SmokeResult]) -> list[SmokeResult]:
    return [result for result in results if result.status == "failed"]
