"""`drsentry run backup|verify|replication-check|archive`: a capability now, as its Lambda runs it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from drsentry.core.errors import BadInput
from drsentry.core.progress import NO_PROGRESS
from drsentry.operator.cli.app import (
    ConfigOption,
    JsonOption,
    TargetOption,
    cli_errors,
    human_bytes,
    print_json,
    run_app,
    runtime_for,
    stderr,
    stdout,
)
from drsentry.operator.cli.layout import Column, print_listing

if TYPE_CHECKING:
    from drsentry.jobs.runner import RunResult
    from drsentry.jobs.runtime import Runtime

# Targets of one `run` at the same time, each in a thread (jobs.parallel). A target's run is
# mostly waiting (on pg_dump, PostgreSQL, S3) with its CPU work in pg_dump and in zstd and
# SHA-256, which release the GIL. 4 bounds what one run asks of the database servers and S3 at
# once. Ten small targets on a 2-core machine already saturated by other work
# (infra/bench/parallel_targets.py): 4 at once 0.95x, 10 at once 0.84x the sequential time.
DEFAULT_MAX_PARALLEL = 4
MaxParallelOption = Annotated[
    int,
    typer.Option(
        "--max-parallel",
        min=1,
        help="How many targets run at once when no --target is given (1: one after another).",
    ),
]


class TerminalProgress:
    """Progress of a long run on stderr (jobs call `runtime.progress`): the phase, the bytes
    dumped or restored and the speed. Drawn only when stderr is a terminal and stdout is not
    --json; a pipe, a log file or a script gets the result lines only."""

    def __init__(self, enabled: bool) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.enabled = enabled and stderr.is_terminal
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
            console=stderr,
            disable=not self.enabled,
        )
        # One line per target: targets of a run go in parallel threads (jobs.parallel).
        self._tasks: dict[int, Any] = {}

    @contextmanager
    def installed(self, runtime: Runtime) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        runtime.progress = self
        with self._bar:
            yield
        runtime.progress = NO_PROGRESS

    def phase(self, description: str, total_bytes: int | None = None) -> None:
        task = self._tasks.get(threading.get_ident())
        if task is None:
            self._tasks[threading.get_ident()] = self._bar.add_task(description, total=total_bytes)
        else:
            self._bar.reset(task, total=total_bytes, description=description)

    def advance(self, size: int) -> None:
        task = self._tasks.get(threading.get_ident())
        if task is not None:
            self._bar.advance(task, size)


def print_targets_not_run(result: RunResult[Any]) -> bool:
    """One stderr line per target of a `run` that was skipped or could not run; True if any."""
    for outcome in result.skipped:
        stderr.print(f"skipped {outcome.target}: {escape(outcome.reason or '')}", highlight=False)
    for outcome in result.not_run:
        stderr.print(f"[bold red]error:[/] {outcome.target}: {escape(outcome.reason or '')}", highlight=False)
    return bool(result.skipped or result.not_run)


@run_app.command("backup")
@cli_errors
def run_backup(
    config: ConfigOption = None,
    target: TargetOption = None,
    as_json: JsonOption = False,
    max_parallel: MaxParallelOption = DEFAULT_MAX_PARALLEL,
) -> None:
    """Back up every target (or one) now: pg_dump streamed to S3, recorded in the catalog.

    Example: drsentry run backup --target app
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.backup.job import run_scheduled_backup

    runtime = runtime_for(config)
    scheduled = ScheduledEvent.now(target, region=runtime.config.storage.region)
    with TerminalProgress(enabled=not as_json).installed(runtime):
        result = run_scheduled_backup(runtime, scheduled, max_parallel=max_parallel)
    failed = [backup for backup in result.records if backup.status != "completed"]
    if as_json:
        print_json(result.document())
    else:
        columns = [
            Column("target", heading=True),
            Column("backup id", heading=True),
            Column("status", heading=True),
            Column("size", drop=3),
            Column("seconds", drop=1),
            Column("tier", drop=2),
            Column("error / warning", fold=True),
        ]
        rows = []
        warned: list[str] = []
        for backup in result.records:
            # A storage manifest that failed leaves the backup completed; the operator must still see it.
            broken = (
                [entry for entry in backup.storage or [] if entry.error]
                if backup.status == "completed"
                else []
            )
            warned.extend(f"{backup.target} {entry.bucket}" for entry in broken)
            style = "red" if backup.status != "completed" else "yellow" if broken else "green"
            problem = escape(backup.error or "") or "\n".join(
                f"[yellow]storage manifest failed: {escape(entry.bucket)}: {escape(entry.error or '')}[/]"
                for entry in broken
            )
            rows.append(
                [
                    backup.target,
                    backup.backup_id,
                    f"[{style}]{backup.status}[/]",
                    human_bytes(backup.size_bytes),
                    f"{backup.duration_seconds or 0.0:.1f}",
                    backup.tier or "-",
                    problem,
                ]
            )
        print_listing("backup", columns, rows)
        completed = len(result.records) - len(failed)
        summary = f"{completed} completed, {len(failed)} failed"
        if warned:
            summary += f"; warning: storage manifest failed for {', '.join(warned)}"
        colour = "red" if failed else "yellow" if warned else "green"
        stdout.print(f"[{colour}]{summary}[/]", highlight=False)
    if print_targets_not_run(result) or failed:
        raise typer.Exit(1)


@run_app.command("verify")
@cli_errors
def run_verify(
    config: ConfigOption = None,
    target: TargetOption = None,
    as_json: JsonOption = False,
    max_parallel: MaxParallelOption = DEFAULT_MAX_PARALLEL,
) -> None:
    """Restore the newest backup of every target (or one) into a scratch database and check it.

    Exit 0 on success or warning, 1 on failure. Example: drsentry run verify --target app
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.verify.job import run_scheduled_verify
    from drsentry.jobs.verify.report import NOTHING_TO_VERIFY

    runtime = runtime_for(config)
    scheduled = ScheduledEvent.now(target, region=runtime.config.storage.region)
    with TerminalProgress(enabled=not as_json).installed(runtime):
        result = run_scheduled_verify(runtime, scheduled, max_parallel=max_parallel)
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


@run_app.command("replication-check")
@cli_errors
def run_replication_check(
    config: ConfigOption = None,
    target: TargetOption = None,
    as_json: JsonOption = False,
    max_parallel: MaxParallelOption = DEFAULT_MAX_PARALLEL,
) -> None:
    """Check that every backup of the last 7 days has an identical copy in the replica region.

    Exit 1 when a replica is missing, differs, failed to replicate or lags past twice max_lag.
    Example: drsentry run replication-check --target app
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.core.units import human_seconds
    from drsentry.jobs.replication.job import run_scheduled_replication_check

    runtime = runtime_for(config)
    if runtime.config.storage.replica is None:
        raise BadInput("storage.replica is not configured: there is no replica to check")
    result = run_scheduled_replication_check(
        runtime, ScheduledEvent.now(target, region=runtime.config.storage.region), max_parallel=max_parallel
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


def print_unrecorded(report: Any) -> None:
    """Dumps no record shows, and completed backups a delete marker hides: on stderr, one line each."""
    if report.unrecorded_count:
        stderr.print(
            f"warning: {report.unrecorded_count} unrecorded backup(s) of {report.target}:", highlight=False
        )
    for dump in report.unrecorded:
        stderr.print(f"unrecorded {escape(dump.key)}: {escape(dump.reason())}", highlight=False)
    # Completed backups a delete marker hides (jobs/archive/purge.py): never purged, a warning.
    for hidden in report.hidden_completed:
        stderr.print(f"warning: {escape(hidden.warning())}", highlight=False)
    for problem in report.purge_problems:
        stderr.print(f"error: {escape(problem)}", highlight=False)


@run_app.command("archive")
@cli_errors
def run_archive(
    config: ConfigOption = None,
    target: TargetOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (keep / archive / expire); change nothing.")
    ] = False,
    as_json: JsonOption = False,
    max_parallel: MaxParallelOption = DEFAULT_MAX_PARALLEL,
) -> None:
    """Apply GFS retention: copy monthly backups to the archive bucket, expire the rest.

    Exit 1 when an archive copy or an expiry failed (including a delete refused by Object Lock).
    Example: drsentry run archive --target app --dry-run
    """
    from drsentry.core.events import ScheduledEvent
    from drsentry.jobs.archive.job import run_scheduled_archive

    runtime = runtime_for(config)
    result = run_scheduled_archive(
        runtime,
        ScheduledEvent.now(target, dry_run=dry_run, region=runtime.config.storage.region),
        max_parallel=max_parallel,
    )
    reports = result.records
    if as_json:
        print_json(result.document())
    else:
        tiers = ("hourly", "daily", "weekly", "monthly")
        colours = {"keep": "green", "archive": "cyan", "expire": "yellow", "expire_primary": "yellow"}
        outcome_colours = {"done": "green", "planned": "dim", "deferred": "yellow", "locked": "yellow"}
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
                    f"refused {report.refused}, deferred {report.deferred}, locked {report.locked}, "
                    f"primary copies expired {report.primary_expired}, locks extended {report.extended}",
                    highlight=False,
                )
                if report.purged or report.purge_locked:
                    stdout.print(
                        f"withdrawn failed backups purged {report.purged}, "
                        f"left under Object Lock {report.purge_locked}",
                        highlight=False,
                    )
            print_unrecorded(report)
    if print_targets_not_run(result) or not all(report.ok for report in reports):
        raise typer.Exit(1)
