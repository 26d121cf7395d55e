"""`drsentry check`: readiness, one line per check."""

from __future__ import annotations

import typer
from rich.markup import escape

from drsentry.operator.cli.app import (
    ConfigOption,
    JsonOption,
    TargetOption,
    app,
    cli_errors,
    print_json,
    runtime_for,
    stdout,
)


@app.command("check")
@cli_errors
def check(config: ConfigOption = None, target: TargetOption = None, as_json: JsonOption = False) -> None:
    """Readiness: configuration, credentials, pg tools and versions, connectivity, buckets,
    versioning, replica region, Object Lock, catalog table, topic, newest backup and
    verification. One line per check; exit 1 when any check fails.

    Example: drsentry check --json
    """
    from drsentry.operator.readiness import readiness

    runtime = runtime_for(config)
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
