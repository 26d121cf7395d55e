"""`drsentry catalog rebuild`: missing backup records recreated from the manifests in the bucket."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from drsentry.operator.cli.app import (
    ConfigOption,
    JsonOption,
    TargetOption,
    catalog_app,
    cli_errors,
    print_json,
    runtime_for,
    stderr,
    stdout,
)


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

    Dumps stored without a record and without a manifest are listed as unrecorded (exit 1).

    Example: drsentry catalog rebuild --target app --dry-run
    """
    from drsentry.operator.rebuild import rebuild_catalog

    reports = rebuild_catalog(runtime_for(config), target, dry_run=dry_run)
    if as_json:
        print_json([report.model_dump() for report in reports])
    else:
        table = Table(title="catalog rebuild" + (" (dry run)" if dry_run else ""), title_justify="left")
        for column in ("target", "manifests", "already present", "added", "unreadable", "unrecorded"):
            table.add_column(column)
        for report in reports:
            table.add_row(
                report.target,
                str(report.manifests),
                str(report.already_present),
                str(len(report.added)),
                str(len(report.unreadable)),
                str(len(report.unrecorded)),
            )
        stdout.print(table)
        for report in reports:
            for key, reason in report.unreadable.items():
                stderr.print(f"unreadable {escape(key)}: {escape(reason)}", highlight=False)
            for key, reason in report.unrecorded.items():
                stderr.print(f"unrecorded {escape(key)}: {escape(reason)}", highlight=False)
    if any(report.unreadable or report.unrecorded for report in reports):
        raise typer.Exit(1)
