"""`drsentry restore`: a real recovery into a database, planned and shown before anything is touched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from drsentry.core.errors import BadInput
from drsentry.operator.cli.app import (
    ConfigOption,
    SmokeOption,
    app,
    cli_errors,
    fail,
    human_age,
    human_bytes,
    runtime_for,
    stderr,
    stdout,
)


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
        (
            "tables",
            escape(", ".join(plan.restored_tables)) if plan.partial else f"all {len(backup.tables)}",
        ),
        ("roles", escape(_roles_line(plan))),
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


def _roles_line(plan: Any) -> str:
    if not plan.keep_owners:
        return "--no-owner: none created, owners and grants dropped"
    if plan.roles is None:
        return "no roles object in this backup: the roles its owners and grants name must exist"
    if not plan.roles.created:
        return "every role the backup needs exists on the target server"
    return f"to create: {', '.join(plan.roles.created)}"


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
    roles = plan.roles
    if roles is not None and roles.created:
        stdout.print(f"roles created: {escape(', '.join(roles.created))}", highlight=False)
    if roles is not None and roles.without_password:
        stdout.print(
            "[yellow]roles without a password[/] (the backup had none; setting one is yours: "
            f"ALTER ROLE name PASSWORD '...'): {escape(', '.join(roles.without_password))}",
            highlight=False,
        )
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


# The options of `restore`, named here so that its signature reads as the list of what it takes.
BackupIdArgument = Annotated[str, typer.Argument(help="The backup to restore (see `drsentry backups list`).")]
ToOption = Annotated[
    str,
    typer.Option(
        "--to",
        help="DSN of the database to restore into (created if missing). Put the password in PGPASSWORD.",
        show_default=False,
    ),
]
TableOption = Annotated[
    list[str] | None,
    typer.Option(
        "--table",
        help='Restore only this table, with its partitions (repeatable): table, schema.table or "S"."T".',
        show_default=False,
    ),
]
SchemaOption = Annotated[
    list[str] | None,
    typer.Option(
        "--schema", help="Restore only this schema, everything in it (repeatable).", show_default=False
    ),
]
NoOwnerOption = Annotated[
    bool,
    typer.Option(
        "--no-owner",
        help="Another environment: everything owned by the restoring user, no grants, no roles created.",
    ),
]
CleanOption = Annotated[
    bool, typer.Option("--clean", help="Allow a non-empty target: drop the backup's objects there first.")
]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
JobsOption = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        min=1,
        help="Parallel pg_restore (downloads to a temporary file first).",
        show_default=False,
    ),
]
MaskOption = Annotated[
    Path | None,
    typer.Option(
        "--mask",
        help="Mask PII with these YAML rules before the database is handed over.",
        show_default=False,
    ),
]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database",
        help="The database to restore, for a backup of a target with several (databases:).",
        show_default=False,
    ),
]
SourceOkOption = Annotated[
    bool,
    typer.Option("--i-know-this-is-the-source", help="Allow --to to be a configured source database."),
]


@app.command("restore")
@cli_errors
def restore(
    backup_id: BackupIdArgument,
    *,
    to: ToOption,
    table: TableOption = None,
    schema: SchemaOption = None,
    no_owner: NoOwnerOption = False,
    clean: CleanOption = False,
    yes: YesOption = False,
    jobs: JobsOption = None,
    mask: MaskOption = None,
    source_ok: SourceOkOption = False,
    smoke: SmokeOption = False,
    database: DatabaseOption = None,
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

    runtime = runtime_for(config)
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
        schemas=tuple(schema or ()),
        no_owner=no_owner,
        database=database,
    )
    smoke_checks = runtime.config.target(plan.backup.target).smoke if smoke else []
    if smoke and not smoke_checks:
        raise BadInput(
            f"--smoke: target {plan.backup.target!r} has no smoke checks configured (targets[].smoke)"
        )
    _print_plan(plan)
    if not yes:
        _confirm(plan)
    with _ProgressBar() as progress:
        result = execute_recovery(runtime, plan, progress, smoke=smoke_checks)
    _print_result(result)
    if result.mismatches:
        names = ", ".join(count.table for count in result.mismatches)
        fail(f"restored row counts differ from the backup's: {names}", 1)
    if result.smoke_failures:
        fail(f"smoke checks failed: {', '.join(check.name for check in result.smoke_failures)}", 1)


def _confirm(plan: Any) -> None:
    """Ask on the terminal before a restore changes a database; exit 1 when the answer is no."""
    if not sys.stdin.isatty():
        raise BadInput("not confirmed: stdin is not a terminal; pass --yes to restore without asking")
    if not typer.confirm(f"Restore {plan.backup.backup_id} into {plan.target.where}?", default=False):
        stderr.print("aborted: nothing was changed")
        raise typer.Exit(1)
