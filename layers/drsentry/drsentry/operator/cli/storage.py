"""`drsentry storage restore-list`: what recreating an application bucket from its manifest would take."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.markup import escape

from drsentry.operator.cli.app import (
    ConfigOption,
    JsonOption,
    cli_errors,
    runtime_for,
    stdout,
    storage_app,
)


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

    runtime = runtime_for(config)
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
