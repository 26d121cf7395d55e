"""The root of the `drsentry` command line: the typer app and its command groups, the options
every command shares, expected failures mapped to exit codes, and the printing helpers.

Exit codes: 0 success; 1 the operation ran and found a failure; 2 bad usage, bad
configuration or bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from drsentry.adapters.aws_errors import AWS_ERRORS, aws_cause, describe, is_no_credentials, operation
from drsentry.core.config import Config, load_config
from drsentry.core.errors import BadInput, DrsentryError, Interrupted
from drsentry.core.units import human_seconds

P = ParamSpec("P")
R = TypeVar("R")

VERBOSE_FLAGS = ("-v", "--verbose")


class _Commands(TyperGroup):
    """The root command: `-v/--verbose` is the program's option wherever it is typed, so that
    `drsentry status -v` works as `drsentry -v status` does (click reads a group's options only
    before the subcommand)."""

    # ctx is the Context of the click that typer vendors (typer._click): a private module, so not named.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if any(arg in VERBOSE_FLAGS for arg in args[:end]):
            args = ["--verbose", *(arg for arg in args[:end] if arg not in VERBOSE_FLAGS), *args[end:]]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: paragraphs are re-wrapped to the terminal, examples stay on their own line.
    rich_markup_mode=None,
    help="Scheduled disaster recovery for PostgreSQL that proves every backup restores.",
)
# The command groups; `drsentry --help` lists them in this order, after the top-level commands.
run_app = typer.Typer(no_args_is_help=True, help="Run a capability now, as its Lambda would.")
backups_app = typer.Typer(no_args_is_help=True, help="The backup catalog.")
local_app = typer.Typer(
    no_args_is_help=True, help="The local stack: embedded PostgreSQL + moto + Slack sink."
)
verifications_app = typer.Typer(no_args_is_help=True, help="The verification log.")
catalog_app = typer.Typer(no_args_is_help=True, help="Repair the catalog.")
storage_app = typer.Typer(no_args_is_help=True, help="Manifests of the application's storage buckets.")
schedules_app = typer.Typer(no_args_is_help=True, help="The stack's EventBridge Scheduler schedules.")
app.add_typer(run_app, name="run")
app.add_typer(backups_app, name="backups")
app.add_typer(local_app, name="local")
app.add_typer(verifications_app, name="verifications")
app.add_typer(catalog_app, name="catalog")
app.add_typer(storage_app, name="storage")
app.add_typer(schedules_app, name="schedules")

stdout = Console(soft_wrap=True)
stderr = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="DRSENTRY_CONFIG",
        help="Path of drsentry.yaml (or set DRSENTRY_CONFIG).",
        show_default=False,
    ),
]
TargetOption = Annotated[str | None, typer.Option("--target", help="Only this target.", show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="One JSON document on stdout, nothing else.")]
SmokeOption = Annotated[
    bool,
    typer.Option("--smoke", help="Run the target's smoke checks (targets[].smoke) after the restore."),
]


def fail(message: str, code: int) -> NoReturn:
    # The message may hold anything a user typed ("[/x]" included): never parse it as markup.
    stderr.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def cli_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn every expected failure into one line and the contract's exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except Interrupted as exc:
            # One line: what was interrupted and what was cleaned up (the run's own words).
            fail(str(exc), exc.exit_code)
        except BadInput as exc:
            fail(str(exc), 2)
        except DrsentryError as exc:
            # Missing credentials is a usage problem wherever an adapter met it (contract: exit 2).
            cause = aws_cause(exc)
            fail(str(exc), 2 if cause is not None and is_no_credentials(cause) else 1)
        except AWS_ERRORS as exc:
            # What no adapter turned into a domain error yet: one line, never a traceback.
            if is_no_credentials(exc):
                fail('no AWS credentials found (for the local stack: eval "$(drsentry local env)")', 2)
            fail(f"AWS {operation(exc)} failed: {describe(exc)}", 1)

    return wrapper


def _config(path: Path | None) -> Config:
    if path is None:
        raise BadInput("no configuration: pass --config PATH or set DRSENTRY_CONFIG")
    return load_config(path)


def runtime_for(path: Path | None) -> Any:
    """The runtime of the configuration at `path` (--config or DRSENTRY_CONFIG)."""
    from drsentry.jobs.runtime import build_runtime

    return build_runtime(_config(path))


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def human_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_age(seconds: float | None) -> str:
    return "-" if seconds is None else human_seconds(seconds)


def _print_version(asked: bool) -> None:
    if asked:
        from drsentry.operator.provenance import drsentry_version

        sys.stdout.write(f"drsentry {drsentry_version()}\n")
        raise typer.Exit()


def first_line(text: str | None) -> str:
    """An error's first line: its one sentence (a PostgreSQL error adds a hint below; --json has it)."""
    return (text or "").strip().split("\n", 1)[0]


@app.callback()
def main_options(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log progress to stderr (before or after the command).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    # EMF metrics are printed to stdout for CloudWatch in Lambda; from the CLI they would
    # corrupt --json output and reach no metric store, so the CLI never emits them.
    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    from drsentry.core.observability import logger

    logger.setLevel("INFO" if verbose else "WARNING")
