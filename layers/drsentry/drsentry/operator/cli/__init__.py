"""The `drsentry` command line, one module per command group.

- app.py: the root command and its groups, the shared options, errors mapped to exit codes
  (cli_errors), printing helpers;
- layout.py: listings that fit the terminal without cutting a backup id;
- listings.py: `status`, `backups list`, `verifications list`;
- restore.py: `restore`;  drill.py: `drill`;  check.py: `check` (readiness);
- runs.py: `run backup|verify|replication-check|archive`;
- local.py: `local up|env|down`;  catalog.py: `catalog rebuild`;  storage.py: `storage restore-list`;
- schedules.py: `schedules sync`.

`main` is the console script (pyproject [project.scripts]).

Exit codes: 0 success; 1 the operation ran and found a failure; 2 bad usage, bad
configuration or bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

import typer
from rich.markup import escape
from typer.exceptions import TyperException

# Importing a module registers its commands. `drsentry --help` lists the top-level commands in
# the order they are registered, so this order is what users see: status, restore, drill, check.
# isort: off
from drsentry.operator.cli import listings, restore, drill, check  # noqa: F401
from drsentry.operator.cli import runs, local, catalog, storage  # noqa: F401
from drsentry.operator.cli import schedules  # noqa: F401

# isort: on
from drsentry.core.errors import Interrupted
from drsentry.operator.cli.app import app as root_command
from drsentry.operator.cli.app import stderr


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # Ctrl-C and ECS's SIGTERM alike: raised where the run is, so it stops pg_dump, aborts its
    # upload, records itself and says so (cli_errors prints the line, exit 128 + signal).
    raise Interrupted(signal.Signals(signum).name, 128 + signum)


def main() -> None:
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    # Usage errors come from the command-line parser as several lines; the contract wants
    # one line and exit 2. Help asked for by giving no arguments is shown as it is.
    try:
        code = root_command(standalone_mode=False, prog_name="drsentry")
    except TyperException as exc:
        context = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(exc.format_message() + "\n")
            sys.exit(2)
        where = f"{context.command_path}: " if context is not None else ""
        stderr.print(f"[bold red]error:[/] {escape(where + exc.format_message())}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        stderr.print("aborted", highlight=False)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
