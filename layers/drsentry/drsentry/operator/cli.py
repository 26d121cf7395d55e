"""The `drsentry` command line.

Exit codes: 0 success; 1 the operation ran and found a failure; 2 bad usage, bad
configuration or bad input (one line on stderr, never a traceback).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import typer
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

from drsentry.adapters.aws_errors import AWS_ERRORS, describe, is_no_credentials, operation
from drsentry.core.config import Config, load_config
from drsentry.core.errors import BadInput, DrsentryError

if TYPE_CHECKING:
    from drsentry.jobs.runner import RunResult

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
run_app = typer.Typer(no_args_is_help=True, help="Run a capability now, as its Lambda would.")
backups_app = typer.Typer(no_args_is_help=True, help="The backup catalog.")
local_app = typer.Typer(
    no_args_is_help=True, help="The local stack: embedded PostgreSQL + moto + Slack sink."
)
app.add_typer(run_app, name="run")
app.add_typer(backups_app, name="backups")
app.add_typer(local_app, name="local")
verifications_app = typer.Typer(no_args_is_help=True, help="The verification log.")
app.add_typer(verifications_app, name="verifications")

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
        except BadInput as exc:
            fail(str(exc), 2)
        except DrsentryError as exc:
            fail(str(exc), 1)
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


def _runtime(path: Path | None) -> Any:
    from drsentry.jobs.runtime import build_runtime

    return build_runtime(_config(path))


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def print_targets_not_run(result: RunResult[Any]) -> bool:
    """One stderr line per target of a `run` that was skipped or could not run; True if any."""
    for outcome in result.skipped:
        stderr.print(f"skipped {outcome.target}: {escape(outcome.reason or '')}", highlight=False)
    for outcome in result.not_run:
        stderr.print(f"[bold red]error:[/] {outcome.target}: {escape(outcome.reason or '')}", highlight=False)
    return bool(result.skipped or result.not_run)


def human_bytes(size: float | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(size) < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _print_version(asked: bool) -> None:
    if asked:
        from drsentry.operator.provenance import drsentry_version

        sys.stdout.write(f"drsentry {drsentry_version()}\n")
        raise typer.Exit()


# Listings ------------------------------------------------------------------------
#
# A backup id is what `restore` needs, so no listing ever shortens one: rich, left to itself,
# squeezes every column of a wide table into a narrow terminal and cuts ids to `20261…`. A
# listing is laid out here instead: the whole table when it fits the width (the terminal's,
# COLUMNS, or 80 with neither, as under cron), else without the columns that matter least,
# else one block of `name value` lines per record.

# The narrowest a folding column (an error, failed checks) gets beside the others: two or three
# words a line still read as a sentence, and a word (a host:port/db) is not split unless it is
# longer than FOLD_WORD_MAX.
FOLD_MIN_WIDTH = 16
FOLD_WORD_MAX = 40
# A table's frame: one bar left of every column and one at the right edge; one space of padding
# each side of a cell.
CELL_PADDING = 2


@dataclass(frozen=True)
class Column:
    """`drop`: when the listing is too wide, columns with drop 1 go first, then 2, ...; 0 never.
    `fold`: free text that may fold onto more lines (ids and statuses never do). `heading`: on
    the first line of a record's block."""

    header: str
    drop: int = 0
    fold: bool = False
    heading: bool = False


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> list[tuple[int, int]]:
    """(natural, narrowest) width of each column's cells, as printed (markup removed)."""
    widths = []
    for index, column in enumerate(columns):
        cells = [Text.from_markup(row[index]).plain for row in rows]
        lines = [line for cell in cells for line in cell.splitlines()]
        natural = max([cell_len(column.header), *(cell_len(line) for line in lines)])
        if column.fold:
            longest_word = max((cell_len(word) for line in lines for word in line.split()), default=0)
            widths.append((natural, min(natural, max(FOLD_MIN_WIDTH, min(longest_word, FOLD_WORD_MAX)))))
        else:
            widths.append((natural, natural))
    return widths


def _table_width(cells: Sequence[int]) -> int:
    return sum(width + CELL_PADDING for width in cells) + len(cells) + 1


def _fitted_widths(natural: list[int], narrowest: list[int], room: int) -> list[int] | None:
    """Column widths within `room`: folding columns give up width, widest first, down to their
    narrowest; None when even that is too wide."""
    if _table_width(narrowest) > room:
        return None
    widths = list(natural)
    while _table_width(widths) > room:
        widest = max(
            (index for index, width in enumerate(widths) if width > narrowest[index]),
            key=lambda index: widths[index],
        )
        widths[widest] -= 1
    return widths


def print_listing(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """Rows of markup cells as a table that fits the width without cutting a cell."""
    room = stdout.width
    for level in range(max((column.drop for column in columns), default=0) + 1):
        shown = [index for index, column in enumerate(columns) if not column.drop or column.drop > level]
        kept = [columns[index] for index in shown]
        kept_rows = [[row[index] for index in shown] for row in rows]
        natural, narrowest = zip(*_widths(kept, kept_rows), strict=True) if kept else ((), ())
        widths = _fitted_widths(list(natural), list(narrowest), room)
        if widths is not None:
            table = Table(title=title, title_justify="left")
            for column, width in zip(kept, widths, strict=True):
                table.add_column(column.header, width=width, no_wrap=not column.fold, overflow="fold")
            for row in kept_rows:
                table.add_row(*row)
            stdout.print(table)
            return
    _print_blocks(title, columns, rows)


def _print_blocks(title: str, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> None:
    """One record per block: its heading columns on the first line, then the other columns that
    have a value, one per line, folded to the width under their own indent."""
    stdout.print(title, highlight=False)
    heading = [index for index, column in enumerate(columns) if column.heading]
    details = [index for index in range(len(columns)) if index not in heading]
    indent = 2 + max((cell_len(columns[index].header) for index in details), default=0) + 2
    for row in rows:
        stdout.print()
        stdout.print("  ".join(row[index] for index in heading), highlight=False)
        for index in details:
            value = Text.from_markup(row[index])
            if value.plain.strip() in {"", "-"}:
                continue
            lines = value.wrap(stdout, max(stdout.width - indent, FOLD_MIN_WIDTH), overflow="fold")
            for number, line in enumerate(lines):
                label = f"  {columns[index].header}" if number == 0 else ""
                line.rstrip()
                stdout.print(Text(label.ljust(indent)) + line, highlight=False)


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


# run ----------------------------------------------------------------------------


@run_app.command("backup")
@cli_errors
def run_backup(config: ConfigOption = None, target: TargetOption = None, as_json: JsonOption = False) -> None:
    """Back up every target (or one) now: pg_dump streamed to S3, recorded in the catalog.

    Example: drsentry run backup --target app
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.backup.job import run_scheduled_backup

    runtime = _runtime(config)
    result = run_scheduled_backup(runtime, ScheduledEvent.now(target, region=runtime.config.storage.region))
    failed = [backup for backup in result.records if backup.status != "completed"]
    if as_json:
        print_json(result.document())
    else:
        table = Table(title="backup", title_justify="left")
        for column in ("target", "backup id", "status", "size", "seconds", "tier", "error"):
            table.add_column(column)
        for backup in result.records:
            style = "green" if backup.status == "completed" else "red"
            table.add_row(
                backup.target,
                backup.backup_id,
                f"[{style}]{backup.status}[/]",
                human_bytes(backup.size_bytes),
                f"{backup.duration_seconds or 0.0:.1f}",
                backup.tier or "-",
                escape(backup.error or ""),
            )
        stdout.print(table)
    if print_targets_not_run(result) or failed:
        raise typer.Exit(1)


@run_app.command("verify")
@cli_errors
def run_verify(config: ConfigOption = None, target: TargetOption = None, as_json: JsonOption = False) -> None:
    """Restore the newest backup of every target (or one) into a scratch database and check it.

    Exit 0 on success or warning, 1 on failure. Example: drsentry run verify --target app
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.verify.job import run_scheduled_verify
    from drsentry.jobs.verify.report import NOTHING_TO_VERIFY

    runtime = _runtime(config)
    result = run_scheduled_verify(runtime, ScheduledEvent.now(target, region=runtime.config.storage.region))
    failed = [verification for verification in result.records if verification.status == "failure"]
    if as_json:
        print_json(result.document())
    else:
        colours = {"success": "green", "warning": "yellow", "failure": "red"}
        check_colours = {"passed": "green", "failed": "red", "skipped": "dim"}
        for verification in result.records:
            status = verification.status
            restore = verification.restore_seconds
            title = (
                f"verify {verification.target} {verification.backup_id}: "
                f"[{colours[status]}]{status}[/] ({verification.checks_passed} passed, "
                f"{verification.checks_failed} failed, restore "
                f"{f'{restore:.1f}s' if restore is not None else '-'})"
            )
            table = Table(title=title, title_justify="left")
            for column in ("check", "severity", "status", "detail"):
                table.add_column(column)
            for check in verification.checks:
                failed_colour = "red" if check.severity == "critical" else "yellow"
                colour = failed_colour if check.status == "failed" else check_colours[check.status]
                table.add_row(
                    escape(check.name),
                    check.severity,
                    f"[{colour}]{check.status}[/]",
                    escape(check.detail),
                )
            stdout.print(table)
    for name in result.no_backup:
        stderr.print(f"not verified {name}: {NOTHING_TO_VERIFY}", highlight=False)
    if print_targets_not_run(result) or failed or result.no_backup:
        raise typer.Exit(1)


# catalog ------------------------------------------------------------------------


@backups_app.command("list")
@cli_errors
def backups_list(
    config: ConfigOption = None,
    target: TargetOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many per target (default: all).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The catalog, newest first.

    Example: drsentry backups list --target app --json
    """
    runtime = _runtime(config)
    records = []
    for selected in runtime.config.selected_targets(target):
        records.extend(runtime.catalog.list_backups(selected.name, limit=limit))
    records.sort(key=lambda record: record.backup_id, reverse=True)
    if as_json:
        print_json([record.model_dump() for record in records])
        return
    columns = [
        Column("target", heading=True),
        Column("backup id", heading=True),
        Column("status", heading=True),
        Column("started", drop=1),  # the backup id begins with the same instant
        Column("size", drop=4),
        Column("seconds", drop=2),
        Column("tier", drop=3),
        Column("replica", drop=3),
        Column("error", fold=True),
    ]
    rows = []
    for record in records:
        style = "green" if record.status == "completed" else "red"
        rows.append(
            [
                record.target,
                record.backup_id,
                f"[{style}]{record.status}[/]",
                record.started_at,
                human_bytes(record.size_bytes),
                f"{record.duration_seconds or 0:.1f}",
                record.tier or "-",
                record.replica or "-",
                escape(first_line(record.error)),
            ]
        )
    print_listing(f"backups ({len(records)})", columns, rows)


@verifications_app.command("list")
@cli_errors
def verifications_list(
    config: ConfigOption = None,
    target: TargetOption = None,
    days: Annotated[
        int, typer.Option("--days", min=1, max=3650, help="Verifications of the last N days (up to 3650).")
    ] = 7,
    as_json: JsonOption = False,
) -> None:
    """The verification log, newest first.

    Example: drsentry verifications list --target app --days 30 --json
    """
    runtime = _runtime(config)
    log = runtime.catalog.verifications
    now = runtime.clock()
    records = []
    for selected in runtime.config.selected_targets(target):
        records.extend(log.history(selected.name, days, now=now))
    records.sort(key=lambda record: (record.verified_at, record.id), reverse=True)
    if as_json:
        print_json([record.model_dump() for record in records])
        return
    columns = [
        Column("verified", drop=4),
        Column("target", heading=True),
        Column("backup id", heading=True),
        Column("status", heading=True),
        Column("checks", drop=3),
        Column("restore", drop=2),
        Column("age", drop=1),
        Column("failed checks", fold=True),
    ]
    colours = {"success": "green", "warning": "yellow", "failure": "red"}
    rows = [
        [
            record.verified_at,
            record.target,
            record.backup_id,
            f"[{colours[record.status]}]{record.status}[/]",
            f"{record.checks_passed}/{record.checks_passed + record.checks_failed}",
            f"{record.restore_seconds:.1f}s" if record.restore_seconds is not None else "-",
            human_age(record.backup_age_hours * 3600 if record.backup_age_hours is not None else None),
            escape(", ".join(check.name for check in record.failed_checks)),
        ]
        for record in records
    ]
    print_listing(f"verifications of the last {days} days ({len(records)})", columns, rows)


@app.command("status")
@cli_errors
def status(config: ConfigOption = None, target: TargetOption = None, as_json: JsonOption = False) -> None:
    """Per target: newest backup (age, size, tier) and its age against the RPO (green, amber
    above 80%, red), newest verification (status, restore time against the RTO, failing
    checks), replication state and the number of archived backups.

    Example: drsentry status --json
    """
    from drsentry.operator.status import status_report

    runtime = _runtime(config)
    report = status_report(runtime, target)
    if as_json:
        print_json(report.model_dump())
        return
    columns = [
        Column("target", heading=True),
        Column("newest backup", heading=True),
        Column("age / RPO"),
        Column("size"),
        Column("tier"),
        Column("verified", fold=True),
        Column("restore / RTO"),
        Column("replication", fold=True),
        Column("archived"),
        Column("last run", fold=True),
    ]
    level_colours = {"green": "green", "amber": "yellow", "red": "red"}
    verification_colours = {"success": "green", "warning": "yellow", "failure": "red"}
    replication_colours = {"ok": "green", "warning": "yellow", "failure": "red"}
    rows = []
    for item in report.targets:
        backup = item.newest_backup or {}
        colour = level_colours[item.rpo_level]
        age = f"[{colour}]{human_age(item.newest_backup_age_seconds)} / {human_age(item.rpo_seconds)}[/]"
        verification = item.newest_verification or {}
        verified = "-"
        if item.verification_status:
            verified = f"[{verification_colours[item.verification_status]}]{item.verification_status}[/]"
            if item.failing_checks:
                verified += f": {escape(', '.join(item.failing_checks))}"
        restore = verification.get("restore_seconds")
        rto_colour = {"ok": "green", "slow": "yellow", "none": "dim"}[item.rto_state]
        restore_text = f"[{rto_colour}]{restore:.1f}s / {human_age(item.rto_seconds)}[/]" if restore else "-"
        replication = item.replication
        if replication:
            replica_text = (
                f"[{replication_colours.get(replication['status'], 'red')}]{replication['status']}[/] "
                f"lag {human_age(replication['lag_seconds'])}, checked {replication['checked_at']}"
            )
        else:
            replica_text = item.replica or "-"
        last = item.last_backup_status or "-"
        if item.last_backup_status == "failed":
            last = f"[red]failed[/]: {escape(first_line(item.last_backup_error))}"
        rows.append(
            [
                item.target,
                backup.get("backup_id", "[red]none[/]"),
                age,
                human_bytes(backup.get("size_bytes")),
                backup.get("tier") or "-",
                verified,
                restore_text,
                replica_text,
                str(item.archived_backups),
                last,
            ]
        )
    print_listing(f"drsentry status at {report.generated_at}", columns, rows)


# local stack --------------------------------------------------------------------


def _state_dir() -> Path:
    # The checkout's own stack (.drsentry/local at its root) unless DRSENTRY_LOCAL_DIR says otherwise.
    from drsentry.local.stack import default_state_dir

    return default_state_dir()


@local_app.command("up")
@cli_errors
def local_up(as_json: JsonOption = False) -> None:
    """Start the embedded PostgreSQL, moto's server and a Slack sink; write drsentry.yaml.

    Example: drsentry local up --json
    """
    from drsentry.local import stack

    state_dir = _state_dir()
    document = stack.up(state_dir)
    if as_json:
        print_json(document)
        return
    stdout.print(f"[green]local stack is up[/] (state in {escape(str(state_dir))})", highlight=False)
    for name, value in document.items():
        stdout.print(f"  {name}: {escape(value)}", highlight=False)
    stdout.print('next: eval "$(drsentry local env)"')


@local_app.command("env")
@cli_errors
def local_env() -> None:
    """Print export lines that point boto3 and drsentry at the local stack.

    Example: eval "$(drsentry local env)"
    """
    from drsentry.local import stack

    sys.stdout.write("\n".join(stack.env_lines(_state_dir())) + "\n")


@local_app.command("down")
@cli_errors
def local_down() -> None:
    """Stop only what `drsentry local up` started here, and forget its databases and Slack posts.

    Example: drsentry local down
    """
    from drsentry.local import stack

    state_dir = _state_dir()
    stopped = stack.down(state_dir)
    where = escape(str(state_dir))
    stdout.print(
        f"stopped: {', '.join(stopped)} ({where}); its databases and Slack posts were removed"
        if stopped
        else f"nothing was running in {where}",
        highlight=False,
    )


# catalog repair -------------------------------------------------------------------

catalog_app = typer.Typer(no_args_is_help=True, help="Repair the catalog.")
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("rebuild")
@cli_errors
def catalog_rebuild(
    config: ConfigOption = None,
    target: TargetOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be added; write nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Recreate missing backup records from the manifests in the bucket (never overwrites).

    Example: drsentry catalog rebuild --target app --dry-run
    """
    from drsentry.operator.rebuild import rebuild_catalog

    reports = rebuild_catalog(_runtime(config), target, dry_run=dry_run)
    if as_json:
        print_json([report.model_dump() for report in reports])
    else:
        table = Table(title="catalog rebuild" + (" (dry run)" if dry_run else ""), title_justify="left")
        for column in ("target", "manifests", "already present", "added", "unreadable"):
            table.add_column(column)
        for report in reports:
            table.add_row(
                report.target,
                str(report.manifests),
                str(report.already_present),
                str(len(report.added)),
                str(len(report.unreadable)),
            )
        stdout.print(table)
        for report in reports:
            for key, reason in report.unreadable.items():
                stderr.print(f"unreadable {escape(key)}: {escape(reason)}", highlight=False)
    if any(report.unreadable for report in reports):
        raise typer.Exit(1)


# replication check ----------------------------------------------------------------


@run_app.command("replication-check")
@cli_errors
def run_replication_check(
    config: ConfigOption = None, target: TargetOption = None, as_json: JsonOption = False
) -> None:
    """Check that every backup of the last 7 days has an identical copy in the replica region.

    Exit 1 when a replica is missing, differs, failed to replicate or lags past twice max_lag.
    Example: drsentry run replication-check --target app
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.replication.job import run_scheduled_replication_check
    from drsentry.jobs.replication.rules import human_seconds

    runtime = _runtime(config)
    if runtime.config.storage.replica is None:
        raise BadInput("storage.replica is not configured: there is no replica to check")
    result = run_scheduled_replication_check(
        runtime, ScheduledEvent.now(target, region=runtime.config.storage.region)
    )
    reports = result.records
    if as_json:
        print_json(result.document())
    else:
        colours = {"ok": "green", "warning": "yellow", "failure": "red"}
        table = Table(title="replication check", title_justify="left")
        for column in [
            "target",
            "status",
            "replica",
            "checked",
            "ok",
            "pending",
            "missing",
            "mismatched",
            "failed",
            "lag",
        ]:
            table.add_column(column)
        for report in reports:
            counts = report.counts
            table.add_row(
                report.target,
                f"[{colours[report.status]}]{report.status}[/]",
                f"s3://{report.replica_bucket} ({report.replica_region}, {report.mode})",
                str(report.checked),
                str(counts.get("ok", 0)),
                str(counts.get("pending", 0)),
                str(counts.get("missing", 0)),
                str(counts.get("mismatched", 0)),
                str(counts.get("failed", 0)),
                human_seconds(report.lag_seconds),
            )
        stdout.print(table)
        for report in reports:
            for problem in report.problems:
                colour = "red" if problem.severity == "critical" else "yellow"
                stdout.print(
                    f"{report.target}: [{colour}]{problem.severity}[/] {problem.check}: {problem.detail}",
                    highlight=False,
                )
    if print_targets_not_run(result) or any(report.status == "failure" for report in reports):
        raise typer.Exit(1)


# archive --------------------------------------------------------------------------


@run_app.command("archive")
@cli_errors
def run_archive(
    config: ConfigOption = None,
    target: TargetOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (keep / archive / expire); change nothing.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Apply GFS retention: copy monthly backups to the archive bucket, expire the rest.

    Exit 1 when an archive copy or an expiry failed (including a delete refused by Object Lock).
    Example: drsentry run archive --target app --dry-run
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.archive.job import run_scheduled_archive

    runtime = _runtime(config)
    result = run_scheduled_archive(
        runtime, ScheduledEvent.now(target, dry_run=dry_run, region=runtime.config.storage.region)
    )
    reports = result.records
    if as_json:
        print_json(result.document())
    else:
        tiers = ("hourly", "daily", "weekly", "monthly")
        colours = {"keep": "green", "archive": "cyan", "expire": "yellow"}
        outcome_colours = {"done": "green", "planned": "dim", "deferred": "yellow"}
        for report in reports:
            title = f"archive {report.target}" + (" (dry run: nothing changed)" if dry_run else "")
            table = Table(title=title, title_justify="left")
            # The id says when the backup started; it is never cut, the reasons wrap instead.
            table.add_column("backup id", no_wrap=True)
            table.add_column("action", no_wrap=True)
            table.add_column("slots / reason")
            table.add_column("outcome")
            for row in report.decisions:
                outcome = ""
                if row.outcome:
                    detail = f": {escape(row.detail)}" if row.detail else ""
                    outcome = f"[{outcome_colours.get(row.outcome, 'red')}]{row.outcome}[/]{detail}"
                table.add_row(
                    row.backup_id,
                    f"[{colours[row.action]}]{row.action}[/]",
                    ", ".join(row.slots) or escape(row.reason),
                    outcome,
                )
            stdout.print(table)
            if report.decisions_omitted:
                stdout.print(f"({report.decisions_omitted} more rows not listed; --dry-run lists all)")
            counts, slots = report.counts, report.slots
            filled = ", ".join(f"{tier} {slots.get(tier, 0)}" for tier in tiers)
            stdout.print(
                f"{report.target}: keep {counts.get('keep', 0)}, archive {counts.get('archive', 0)}, "
                f"expire {counts.get('expire', 0)}; slots: {filled}",
                highlight=False,
            )
            if not dry_run:
                stdout.print(
                    f"archived {report.archived}, expired {report.expired}, failed {report.failed}, "
                    f"refused {report.refused}, deferred {report.deferred}",
                    highlight=False,
                )
    if print_targets_not_run(result) or not all(report.ok for report in reports):
        raise typer.Exit(1)


# restore ----------------------------------------------------------------------------


class _ProgressBar:
    """The restore's progress on stderr: bytes, speed and ETA, then what pg_restore is doing."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=stderr,
            # A bar redrawn into a log file or a pipe is noise; scripts get the result lines only.
            disable=not stderr.is_terminal,
        )
        self._task: Any = None

    def __enter__(self) -> _ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._progress.stop()

    def start(self, description: str, total_bytes: int | None) -> None:
        self._task = self._progress.add_task(description, total=total_bytes)

    def advance(self, size: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, size)

    def phase(self, description: str) -> None:
        if self._task is not None:
            self._progress.update(self._task, description=description)


def _print_plan(plan: Any) -> None:
    backup = plan.backup
    verification = plan.verification
    colours = {"success": "green", "warning": "yellow", "failure": "red"}
    if verification is None:
        verified = "[yellow]never verified[/]: this restore is the first proof that it restores"
    else:
        failed = f", failed: {escape(', '.join(c.name for c in verification.failed_checks))}"
        verified = (
            f"[{colours[verification.status]}]{verification.status}[/] at {verification.verified_at}: "
            f"{verification.checks_passed}/{verification.checks_passed + verification.checks_failed} checks"
            + (f", restored in {verification.restore_seconds:.1f}s" if verification.restore_seconds else "")
            + (failed if verification.failed_checks else "")
        )
    target = plan.target
    if not target.exists:
        state = "does not exist: it will be created"
    elif target.empty:
        state = "exists, empty"
    else:
        state = f"[yellow]not empty[/] ({target.describe_objects()}), --clean"
    version = f", PostgreSQL {target.server_version}" if target.server_version else ""
    rows = [
        ("backup", f"{backup.backup_id} (target {backup.target}, tier {backup.tier or '-'})"),
        ("taken", f"{backup.started_at}, {human_age(plan.backup_age_seconds)} ago"),
        ("size", f"{human_bytes(backup.size_bytes)}, sha256 {backup.sha256}"),
        ("verification", verified),
        ("source", escape(plan.source.description)),
        ("restore into", f"[bold]{escape(target.where)}[/] ({state}{version})"),
        ("tables", escape(", ".join(plan.tables)) if plan.tables else f"all {len(backup.tables)}"),
    ]
    if plan.mask is not None:
        rows.append(("mask", f"{escape(plan.mask.source)} ({len(plan.mask.tables)} table rule(s))"))
    stdout.print("[bold]restore plan[/]")
    for name, value in rows:
        stdout.print(f"  {name:<13} {value}", highlight=False)
    for number, step in enumerate(plan.actions(), start=1):
        stdout.print(f"  {number}. {escape(step)}", highlight=False)
    for note in plan.notes:
        stdout.print(f"  [yellow]note:[/] {escape(note)}", highlight=False)


def _print_result(result: Any) -> None:
    plan = result.plan
    stdout.print(
        f"[green]restored[/] {plan.backup.backup_id} into {escape(plan.target.where)} in "
        f"{result.total_seconds:.1f}s (download and pg_restore {result.restore_seconds:.1f}s); "
        f"{human_bytes(result.size_bytes)}, SHA-256 equals the catalog's",
        highlight=False,
    )
    table = Table(title="restored rows", title_justify="left")
    table.add_column("table")
    table.add_column("rows restored", justify="right")
    table.add_column("rows in backup", justify="right")
    table.add_column("")
    for count in result.counts:
        restored = "-" if count.restored is None else f"{count.restored:,}"
        expected = "-" if count.expected is None else f"{count.expected:,}"
        verdict = (
            f"[dim]{count.note}[/]" if count.note else "[green]ok[/]" if count.matches else "[red]differs[/]"
        )
        table.add_row(count.table, restored, expected, verdict)
    stdout.print(table)
    if result.masking is not None:
        for proof in result.masking.proofs:
            stdout.print(
                f"  masked {proof.table}.{proof.column} with {escape(proof.rule)}: "
                f"{proof.originals:,} original values, none survives",
                highlight=False,
            )
        stdout.print(f"[green]masking proven[/]: {escape(result.masking.summary())}", highlight=False)
    for warning in result.warnings:
        stderr.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if result.smoke:
        _print_smoke(result.smoke)


def _print_smoke(results: list[Any]) -> None:
    # One line per check, never a wrapped table cell: the detail is what an operator greps for.
    passed = sum(result.status == "passed" for result in results)
    stdout.print(f"[bold]smoke checks[/]: {passed}/{len(results)} passed", highlight=False)
    for result in results:
        verdict = "[green]PASS[/]" if result.status == "passed" else "[red]FAIL[/]"
        stdout.print(
            f"  {verdict}  {escape(result.name)} ({result.kind} {escape(result.target)}, "
            f"{result.seconds:.2f}s of {result.max_seconds:g}s): {escape(result.detail)}",
            highlight=False,
        )


@app.command("restore")
@cli_errors
def restore(
    backup_id: Annotated[str, typer.Argument(help="The backup to restore (see `drsentry backups list`).")],
    *,
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="DSN of the database to restore into (created if missing). Put the password in PGPASSWORD.",
            show_default=False,
        ),
    ],
    table: Annotated[
        list[str] | None,
        typer.Option("--table", help="Restore only this table (repeatable).", show_default=False),
    ] = None,
    clean: Annotated[
        bool, typer.Option("--clean", help="Allow a non-empty target: drop the backup's objects there first.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            min=1,
            help="Parallel pg_restore (downloads to a temporary file first).",
            show_default=False,
        ),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(
            "--mask",
            help="Mask PII with these YAML rules before the database is handed over.",
            show_default=False,
        ),
    ] = None,
    source_ok: Annotated[
        bool,
        typer.Option("--i-know-this-is-the-source", help="Allow --to to be a configured source database."),
    ] = False,
    smoke: SmokeOption = False,
    config: ConfigOption = None,
) -> None:
    """Restore a backup into a database: a real recovery. Shows the plan and asks first.

    Refuses a non-empty target unless --clean, a configured source database unless
    --i-know-this-is-the-source, and any restore whose SHA-256 differs from the catalog's.
    Ends with the row count of every restored table next to the backup's, and with --smoke the
    backup's target's smoke checks (exit 1 when one fails). Give the password in PGPASSWORD (or
    ~/.pgpass), not in --to, where `ps` would show it.

    Example: drsentry restore 20261122T180000042Z-1a2b3c4d --to postgresql://admin@db.internal/app_restored
    """
    from drsentry.operator.masking import load_rules
    from drsentry.operator.recovery import execute_recovery, plan_recovery

    runtime = _runtime(config)
    rules = load_rules(mask) if mask is not None else None
    plan = plan_recovery(
        runtime,
        backup_id,
        to,
        tables=tuple(table or ()),
        clean=clean,
        jobs=jobs,
        mask=rules,
        allow_source=source_ok,
    )
    smoke_checks = runtime.config.target(plan.backup.target).smoke if smoke else []
    if smoke and not smoke_checks:
        raise BadInput(
            f"--smoke: target {plan.backup.target!r} has no smoke checks configured (targets[].smoke)"
        )
    _print_plan(plan)
    if not yes:
        if not sys.stdin.isatty():
            raise BadInput("not confirmed: stdin is not a terminal; pass --yes to restore without asking")
        if not typer.confirm(f"Restore {plan.backup.backup_id} into {plan.target.where}?", default=False):
            stderr.print("aborted: nothing was changed")
            raise typer.Exit(1)
    with _ProgressBar() as progress:
        result = execute_recovery(runtime, plan, progress, smoke=smoke_checks)
    _print_result(result)
    if result.mismatches:
        names = ", ".join(count.table for count in result.mismatches)
        fail(f"restored row counts differ from the backup's: {names}", 1)
    if result.smoke_failures:
        fail(f"smoke checks failed: {', '.join(check.name for check in result.smoke_failures)}", 1)


# drill ----------------------------------------------------------------------------


@app.command("drill")
@cli_errors
def drill(
    config: ConfigOption = None,
    target: TargetOption = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write the drill report: HTML when FILE ends in .html, else Markdown.",
            show_default=False,
        ),
    ] = None,
    smoke: SmokeOption = False,
    as_json: JsonOption = False,
) -> None:
    """A DR drill: a fresh backup, restored into scratch and verified, measured against the
    RPO and RTO; with --smoke, the target's smoke checks run on the restore and go into the
    report. Exit 1 when the drill fails.

    Example: drsentry drill --target app --smoke --report drill-2026-q4.html
    """
    from drsentry.operator.drill import run_drill
    from drsentry.operator.drill_report import format_seconds, write_report

    measured = format_seconds

    runtime = _runtime(config)
    targets = runtime.config.selected_targets(target)
    if len(targets) > 1:
        names = ", ".join(t.name for t in targets)
        raise BadInput(f"pass --target: a drill covers one target ({names} are configured)")
    if report is not None and not report.parent.resolve().is_dir():
        raise BadInput(f"--report {report}: directory {report.parent} does not exist")
    with stderr.status("drill starting") as spinner:
        result = run_drill(runtime, targets[0].name, on_phase=spinner.update, smoke=smoke, config_file=config)
    if report is not None:
        try:
            kind = write_report(result, report)
        except OSError as exc:
            raise DrsentryError(f"cannot write the drill report {report}: {exc.strerror or exc}") from exc
    if as_json:
        print_json(result.model_dump())
    else:
        colour = "green" if result.status == "PASS" else "red"
        stdout.print(f"drill {result.target}: [bold {colour}]{result.status}[/]", highlight=False)
        rows = [
            ("total duration", format_seconds(result.total_seconds)),
            ("backup", f"{result.backup_id} {result.backup_status}, {format_seconds(result.backup_seconds)}"),
            ("restore", format_seconds(result.restore_seconds)),
            ("checks", f"{result.checks_passed}/{result.checks_total} passed ({result.verification_status})"),
            ("RTO", f"{measured(result.rto_measured_seconds)} of {measured(result.rto_target_seconds)}"),
            ("RPO", f"{measured(result.rpo_measured_seconds)} of {measured(result.rpo_target_seconds)}"),
        ]
        if result.smoke is not None:
            passed = sum(check.status == "passed" for check in result.smoke)
            rows.append(("smoke checks", f"{passed}/{len(result.smoke)} passed"))
        for name, value in rows:
            stdout.print(f"  {name:<15} {value}", highlight=False)
        for issue in result.issues:
            stdout.print(f"  [yellow]issue:[/] {escape(issue)}", highlight=False)
        for advice in result.recommendations:
            stdout.print(f"  [cyan]recommendation:[/] {escape(advice)}", highlight=False)
    if report is not None:
        stderr.print(f"{kind} report written to {report}", highlight=False)
    if result.status != "PASS":
        raise typer.Exit(1)


# readiness ------------------------------------------------------------------------


@app.command("check")
@cli_errors
def check(config: ConfigOption = None, target: TargetOption = None, as_json: JsonOption = False) -> None:
    """Readiness: configuration, credentials, pg tools and versions, connectivity, buckets,
    versioning, replica region, Object Lock, catalog table, topic, newest backup and
    verification. One line per check; exit 1 when any check fails.

    Example: drsentry check --json
    """
    from drsentry.operator.readiness import readiness

    runtime = _runtime(config)
    result = readiness(runtime, str(config), target)
    if as_json:
        print_json(result.model_dump())
    else:
        colours = {"pass": "green", "warn": "yellow", "fail": "red"}
        for item in result.checks:
            name = f"{item.name} [{item.target}]" if item.target else item.name
            stdout.print(
                f"[{colours[item.status]}]{item.status.upper():<4}[/]  "
                f"{escape(f'{name:<30}')} {escape(item.detail)}",
                highlight=False,
            )
        verdict = "[green]READY[/]" if result.ready else "[red]NOT READY[/]"
        stdout.print(
            f"{verdict}: {result.passed} passed, {result.warnings} warning(s), {result.failed} failed",
            highlight=False,
        )
    if not result.ready:
        raise typer.Exit(1)


# storage buckets ------------------------------------------------------------------

storage_app = typer.Typer(no_args_is_help=True, help="Manifests of the application's storage buckets.")
app.add_typer(storage_app, name="storage")


@storage_app.command("restore-list")
@cli_errors
def storage_restore_list(
    manifest: Annotated[
        str,
        typer.Argument(
            help="s3://BUCKET/KEY of a storage manifest, or a backup id (with --bucket when it has several).",
            show_default=False,
        ),
    ],
    bucket: Annotated[
        str | None,
        typer.Option("--bucket", help="The application bucket (with a backup id).", show_default=False),
    ] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """What recreating a bucket as its manifest lists it would take, from the bucket's versions:
    per key, the version id to restore, or missing. Keys still current need nothing and are only
    counted. Exit 1 when a key cannot be recovered.

    Example: drsentry storage restore-list 20261122T180000042Z-1a2b3c4d --bucket acme-uploads
    """
    import tempfile

    from drsentry.jobs.storage_manifest.restore_list import resolve_manifest, restore_list
    from drsentry.jobs.storage_manifest.rules import human_size

    runtime = _runtime(config)
    source = resolve_manifest(runtime, manifest, bucket)
    with tempfile.SpooledTemporaryFile(8 * 1024 * 1024, mode="w+", encoding="utf-8") as spool:
        result = restore_list(runtime, source, spool)
        summary = {**result.counts, "total": result.total, "bytes_to_restore": result.bytes_to_restore}
        if as_json:
            # Streamed: a bucket of millions of keys to restore never sits in memory as one document.
            head = {
                "manifest": source.url,
                "backup_id": source.backup_id,
                "bucket": source.bucket,
                "region": source.region,
                "prefix": source.prefix,
                "versioned": source.versioned,
                "summary": summary,
            }
            sys.stdout.write(json.dumps(head, indent=2)[:-2] + ',\n  "keys": [')
            for number, action in enumerate(result.actions()):
                sys.stdout.write(("," if number else "") + "\n    " + json.dumps(action))
            sys.stdout.write("\n  ]\n}\n")
        else:
            versioning = "versioned" if source.versioned else "not versioned"
            stdout.print(
                f"restore list for s3://{source.bucket}/{source.prefix} ({versioning}) from {source.url}",
                highlight=False,
                markup=False,
            )
            for action in result.actions():
                version = f" version {action['version_id']}" if action["version_id"] else ""
                colour = "yellow" if action["action"] == "restore" else "red"
                stdout.print(
                    f"[{colour}]{action['action']:<8}[/] {escape(action['key'])}{version}"
                    f" [dim]({escape(action['note'])})[/]",
                    highlight=False,
                )
            stdout.print(
                f"{result.total:,} keys in the manifest: {result.counts['current']:,} current, "
                f"{result.counts['restore']:,} to restore from a version "
                f"({human_size(result.bytes_to_restore)}), {result.counts['missing']:,} missing",
                highlight=False,
            )
    if result.counts["missing"]:
        raise typer.Exit(1)


def main() -> None:
    # Usage errors come from the command-line parser as several lines; the contract wants
    # one line and exit 2. Help asked for by giving no arguments is shown as it is.
    try:
        code = app(standalone_mode=False, prog_name="drsentry")
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
