"""`drsentry backups list`, `verifications list` and `status`: what the catalog holds, laid out to fit."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from drsentry.operator.cli.app import (
    ConfigOption,
    JsonOption,
    TargetOption,
    app,
    backups_app,
    cli_errors,
    first_line,
    human_age,
    human_bytes,
    print_json,
    runtime_for,
    verifications_app,
)
from drsentry.operator.cli.layout import Column, print_listing


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
    runtime = runtime_for(config)
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
    runtime = runtime_for(config)
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

    runtime = runtime_for(config)
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
        # One word, the newest state (operator/status.py); why, when it is not ok; then the lag.
        replica_text = "-"
        if item.replica:
            replica_text = f"[{replication_colours.get(item.replica, 'yellow')}]{item.replica}[/]"
            if item.replica != "ok" and item.replica_reason:
                replica_text += f": {escape(first_line(item.replica_reason))}"
            if item.replication:
                replica_text += f"; lag {human_age(item.replication['lag_seconds'])}"
            replica_text += f"; as of {item.replica_at}"
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
