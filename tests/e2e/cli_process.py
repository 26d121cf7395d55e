"""`drsentry ARGS` in its own process, as a user's shell runs it: what the e2e tests drive."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COMMAND = [sys.executable, "-c", "from drsentry.operator.cli import main; main()"]


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    columns: int | None = None,
    cwd: Path | None = None,
    timeout: float = 180,
) -> subprocess.CompletedProcess[str]:
    """This process's environment without `unset` (and without COLUMNS unless `columns` is given,
    so a table's width never depends on the terminal pytest ran in), plus `env`; no stdin."""
    environment = {name: value for name, value in os.environ.items() if name not in (*unset, "COLUMNS")}
    if columns is not None:
        environment["COLUMNS"] = str(columns)
    environment.update(env or {})
    return subprocess.run(
        [*COMMAND, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )
