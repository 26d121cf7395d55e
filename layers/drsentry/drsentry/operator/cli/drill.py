"""`drsentry drill`: a fresh backup restored and verified, measured against the RPO and RTO."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from drsentry.core.errors import BadInput, DrsentryError
from drsentry.operator.cli.app import (
    ConfigOption,
    JsonOption,
    SmokeOption,
    TargetOption,
    app,
    cli_errors,
    print_json,
    runtime_for,
    stderr,
    stdout,
)


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

    runtime = runtime_for(config)
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
