"""Progress of `run backup` and `run verify`: on stderr when it is a terminal, nothing extra
when it is not or with --json.

The terminal is a real pseudo-terminal (python's `pty`) on the CLI's stderr, as in an
operator's shell; stdout stays a pipe so the result can be read apart from the bar.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_process import COMMAND

pytestmark = pytest.mark.e2e

# Progress text: the phase the jobs report, and the bar's byte counts.
BACKUP_PHASE = "backup app: pg_dump"
VERIFY_PHASE = "verify app: restoring"


def in_a_terminal(*args: str) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal: (exit code, stdout, what the terminal showed)."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    for name in ("NO_COLOR", "CI", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        env.pop(name, None)
    process = subprocess.Popen(
        [*COMMAND, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal, env=env
    )
    os.close(terminal)
    shown = bytearray()
    while True:
        try:
            data = os.read(controller, 65536)
        except OSError:  # EIO: the CLI exited and closed the terminal
            break
        if not data:
            break
        shown.extend(data)
    os.close(controller)
    assert process.stdout is not None
    output = process.stdout.read().decode()
    return process.wait(timeout=180), output, shown.decode(errors="replace")


def piped(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture
def config_path(source_db: str, make_config: Any) -> Path:
    _, path = make_config(source_db)
    return Path(path)


def test_backup_and_verify_show_progress_in_a_terminal(config_path: Path) -> None:
    # When a backup and then a verification run with stderr on a terminal
    backup_code, backup_out, backup_shown = in_a_terminal("run", "backup", "--config", str(config_path))
    verify_code, verify_out, verify_shown = in_a_terminal("run", "verify", "--config", str(config_path))

    # Then the terminal showed each one's phase and the bytes it moved, and the result table
    # still went to stdout
    assert backup_code == 0, backup_shown
    assert BACKUP_PHASE in backup_shown
    assert "kB" in backup_shown or "MB" in backup_shown, backup_shown
    assert "completed" in backup_out
    assert verify_code == 0, verify_shown
    assert VERIFY_PHASE in verify_shown
    assert "kB" in verify_shown or "MB" in verify_shown, verify_shown
    assert "success" in verify_out or "warning" in verify_out


def test_no_progress_when_stderr_is_piped(config_path: Path) -> None:
    backup = piped("run", "backup", "--config", str(config_path))
    verify = piped("run", "verify", "--config", str(config_path))

    assert backup.returncode == 0, backup.stderr
    assert verify.returncode == 0, verify.stderr
    assert BACKUP_PHASE not in backup.stderr and VERIFY_PHASE not in verify.stderr
    assert backup.stderr == "" and verify.stderr == ""


def test_no_progress_with_json_even_in_a_terminal(config_path: Path) -> None:
    # When --json is asked for in a terminal
    code, output, shown = in_a_terminal("run", "backup", "--config", str(config_path), "--json")

    # Then stdout is one JSON document and the terminal shows no progress
    assert code == 0, shown
    assert json.loads(output)["backups"][0]["status"] == "completed"
    assert BACKUP_PHASE not in shown
    assert shown.strip() == ""
