"""The servers the suite starts survive another pytest session on the same machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_a_second_pytest_session_leaves_the_embedded_server_running(pg_server: Any, tmp_path: Path) -> None:
    # Given the session's embedded PostgreSQL, running as another system user when we are root
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute("checkpoint")
    # When a second pytest session starts: it re-applies 0700 to its shared temporary root
    (tmp_path / "test_nothing.py").write_text("def test_nothing(tmp_path):\n    assert tmp_path.is_dir()\n")
    second = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path / "test_nothing.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    # Then the first session's server still reads and writes its data directory
    with psycopg.connect(pg_server.dsn("postgres"), autocommit=True) as conn:
        conn.execute("create temporary table survived (n int)")
        conn.execute("checkpoint")
        assert conn.execute("select count(*) from pg_stat_activity").fetchone() is not None
