"""The issue's targets, judged on one result document, as a text table and as Markdown.

    .venv/bin/python infra/bench/report.py infra/bench/results/<timestamp>.json [--markdown]

prints the tables of a stored result again (``--markdown``: the RESULTS.md text).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MB = 1e6
MiB = 1024 * 1024

# (key, label, limit, unit); a ratio's limit is a factor, a size's MB, a time's seconds.
BACKUP_VS_SEEDS = 0.3
BACKUP_VS_FLOOR = 1.4
STORED_VS_GZIP = 0.95
PEAK_RSS_LIMIT_MB = 200
PEAK_RSS_GROWTH = 0.10
VERIFY_VS_RESTORE = 1.2
REPLICATION_SECONDS = 30.0
GFS_SECONDS = 2.0
IMPORT_SECONDS = 0.4

CONTENDER_LABELS: dict[str, str] = {
    "drsentry": "drsentry run backup",
    "seeds": "seeds: pg_dump | gzip > file; upload_file",
    "floor": "floor: pg_dump -Fc -Z0 > /dev/null",
    "drsentry-small": "drsentry run backup (small database)",
    "drsentry-verify": "drsentry run verify",
    "pg_restore": "floor: pg_restore of the same dump",
}


def spread(values: Sequence[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def summarize(samples: list[dict[str, Any]], database_size: int | None = None) -> dict[str, Any]:
    """Median and spread of every number the samples of one contender share."""
    ok = [sample for sample in samples if sample.get("returncode", 0) == 0] or samples
    summary: dict[str, Any] = {
        "samples": len(samples),
        "failed": len(samples) - len([s for s in samples if s.get("returncode", 0) == 0]),
    }
    for field in (
        "wall_seconds",
        "cpu_seconds",
        "main_cpu_seconds",
        "server_cpu_seconds",
        "s3_cpu_seconds",
        "other_cpu_seconds",
    ):
        summary[field] = spread([sample.get(field, 0.0) for sample in ok])
    summary["main_peak_rss_bytes"] = spread([sample["main_peak_rss_bytes"] for sample in ok])
    if all("stored_bytes" in sample for sample in ok):
        summary["stored_bytes"] = spread([sample["stored_bytes"] for sample in ok])
    children: dict[str, dict[str, list[float]]] = {}
    for sample in ok:
        for name, child in sample.get("children", {}).items():
            entry = children.setdefault(name, {"cpu_seconds": [], "peak_rss_bytes": []})
            entry["cpu_seconds"].append(child["cpu_seconds"])
            entry["peak_rss_bytes"].append(child["peak_rss_bytes"])
    summary["children"] = {
        name: {"cpu_seconds": spread(values["cpu_seconds"]), "peak_rss_bytes": max(values["peak_rss_bytes"])}
        for name, values in children.items()
    }
    if database_size:
        summary["mb_per_second"] = round(database_size / MB / summary["wall_seconds"]["median"], 1)
    return summary


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _median(summary: dict[str, Any] | None, field: str) -> float | None:
    if not summary or field not in summary:
        return None
    return float(summary[field]["median"])


def evaluate(document: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target of the issue: what was measured, the limit, PASS or MISS."""
    rows: list[dict[str, Any]] = []

    def add(target: str, measured: str, limit: str, ok: bool | None, value: float | None) -> None:
        rows.append(
            {"target": target, "measured": measured, "limit": limit, "status": _status(ok), "value": value}
        )

    backup = document.get("backup", {}).get("summary", {})
    drsentry, seeds, floor = backup.get("drsentry"), backup.get("seeds"), backup.get("floor")
    wall = _median(drsentry, "wall_seconds")
    if drsentry and seeds:
        ratio = _ratio(wall, _median(seeds, "wall_seconds"))
        assert ratio is not None
        add(
            "backup wall time vs the seeds' pipeline",
            f"{ratio:.2f}x ({wall:.1f}s vs {_median(seeds, 'wall_seconds'):.1f}s)",
            f"<= {BACKUP_VS_SEEDS}x",
            ratio <= BACKUP_VS_SEEDS,
            ratio,
        )
        stored = _ratio(_median(drsentry, "stored_bytes"), _median(seeds, "stored_bytes"))
        if stored is not None:
            add(
                "stored size vs the seeds' gzip",
                f"{stored:.2f}x ({_median(drsentry, 'stored_bytes') / MB:.0f} MB vs "  # type: ignore[operator]
                f"{_median(seeds, 'stored_bytes') / MB:.0f} MB)",  # type: ignore[operator]
                f"<= {STORED_VS_GZIP}x",
                stored <= STORED_VS_GZIP,
                stored,
            )
    if drsentry and floor:
        ratio = _ratio(wall, _median(floor, "wall_seconds"))
        assert ratio is not None
        add(
            "backup wall time vs the pg_dump floor",
            f"{ratio:.2f}x ({wall:.1f}s vs {_median(floor, 'wall_seconds'):.1f}s)",
            f"<= {BACKUP_VS_FLOOR}x",
            ratio <= BACKUP_VS_FLOOR,
            ratio,
        )
    memory = document.get("memory", {}).get("summary", {})
    small, default = memory.get("small"), memory.get("default")
    for name, summary in (("small", small), ("default", default)):
        if summary:
            peak = summary["main_peak_rss_bytes"]["max"] / MiB
            size = summary.get("database_size_bytes", 0) / 1e9
            add(
                f"drsentry peak RSS, {name} database ({size:.2f} GB)",
                f"{peak:.0f} MiB",
                f"<= {PEAK_RSS_LIMIT_MB} MiB",
                peak <= PEAK_RSS_LIMIT_MB,
                peak,
            )
    if small and default:
        low = small["main_peak_rss_bytes"]["median"]
        high = default["main_peak_rss_bytes"]["median"]
        growth = (high - low) / low
        add(
            "drsentry peak RSS growth, small -> default",
            f"{growth:+.1%} ({low / MiB:.0f} -> {high / MiB:.0f} MiB)",
            f"< {PEAK_RSS_GROWTH:.0%}",
            growth < PEAK_RSS_GROWTH,
            growth,
        )
    verify = document.get("verify", {}).get("summary", {})
    if verify.get("drsentry-verify") and verify.get("pg_restore"):
        verify_wall = _median(verify["drsentry-verify"], "wall_seconds")
        restore_wall = _median(verify["pg_restore"], "wall_seconds")
        ratio = _ratio(verify_wall, restore_wall)
        assert ratio is not None and verify_wall is not None and restore_wall is not None
        add(
            "verify wall time vs a bare pg_restore",
            f"{ratio:.2f}x ({verify_wall:.1f}s vs {restore_wall:.1f}s)",
            f"<= {VERIFY_VS_RESTORE}x",
            ratio <= VERIFY_VS_RESTORE,
            ratio,
        )
    replication = document.get("replication_check")
    if replication and "steady_check_seconds" in replication:
        seconds = float(replication["steady_check_seconds"])
        add(
            f"replication check, {replication['backups']:,} entries (hourly run)",
            f"{seconds:.1f}s (first run, writing every state: {replication['first_check_seconds']:.0f}s)",
            f"<= {REPLICATION_SECONDS:.0f}s",
            seconds <= REPLICATION_SECONDS and bool(replication.get("correct")),
            seconds,
        )
    gfs = document.get("gfs_plan")
    if gfs and "plan_seconds" in gfs:
        seconds = float(gfs["plan_seconds"]["median"])
        add(
            f"GFS plan, {gfs['rows']:,} rows",
            f"{seconds:.2f}s (median of {gfs['repeat']})",
            f"<= {GFS_SECONDS:.0f}s",
            seconds <= GFS_SECONDS and bool(gfs.get("correct")),
            seconds,
        )
    cold = document.get("cold_start", {}).get("handlers", {})
    for name, handler in cold.items():
        shipped = handler["median_seconds"]["bytecode"]
        uncompiled = handler["median_seconds"]["source"]
        add(
            f"cold import of functions/{name}",
            f"{shipped * 1000:.0f} ms from the layer as built ({uncompiled * 1000:.0f} ms without its .pyc)",
            f"<= {IMPORT_SECONDS * 1000:.0f} ms",
            shipped <= IMPORT_SECONDS,
            shipped,
        )
    return rows


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value / MB:,.0f} MB"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MiB:,.0f} MiB"


def _seconds(summary: dict[str, Any], field: str = "wall_seconds") -> str:
    values = summary[field]
    return f"{values['median']:.1f} ({values['min']:.1f}-{values['max']:.1f})"


def contender_rows(document: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    backup = document.get("backup", {}).get("summary", {})
    memory = document.get("memory", {}).get("summary", {})
    summaries = dict(backup)
    if memory.get("small"):
        summaries["drsentry-small"] = memory["small"]
    for name, summary in summaries.items():
        children = summary.get("children", {})
        is_drsentry = name.startswith("drsentry")
        pg_dump_cpu = children.get("pg_dump", {}).get("cpu_seconds", {}).get("median")
        pg_dump_peak = children.get("pg_dump", {}).get("peak_rss_bytes")
        if name == "floor":  # the floor's own process is pg_dump
            pg_dump_cpu = summary["main_cpu_seconds"]["median"]
            pg_dump_peak = summary["main_peak_rss_bytes"]["max"]
        rows.append(
            [
                CONTENDER_LABELS.get(str(name), str(name)),
                _seconds(summary),
                f"{summary.get('mb_per_second', 0):.0f}",
                _mb(summary["stored_bytes"]["median"]) if "stored_bytes" in summary else "-",
                f"{summary['cpu_seconds']['median']:.1f}",
                f"{summary['main_cpu_seconds']['median']:.1f}" if is_drsentry else "-",
                "-" if pg_dump_cpu is None else f"{pg_dump_cpu:.1f}",
                f"{summary['server_cpu_seconds']['median']:.1f}",
                f"{summary['s3_cpu_seconds']['median']:.1f}",
                f"{summary['other_cpu_seconds']['median']:.1f}",
                _mib(summary["main_peak_rss_bytes"]["max"]) if is_drsentry else "-",
                _mib(pg_dump_peak),
            ]
        )
    return rows


CONTENDER_HEADER = [
    "backup",
    "wall s, median (min-max)",
    "MB/s of db",
    "stored",
    "CPU s (tree)",
    "CPU s drsentry",
    "CPU s pg_dump",
    "CPU s postgres",
    "CPU s moto",
    "CPU s others",
    "drsentry peak RSS",
    "pg_dump peak RSS",
]


def verify_rows(document: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for name, summary in document.get("verify", {}).get("summary", {}).items():
        rows.append(
            [
                CONTENDER_LABELS.get(str(name), str(name)),
                _seconds(summary),
                f"{summary['cpu_seconds']['median']:.1f}",
                f"{summary['server_cpu_seconds']['median']:.1f}",
                f"{summary['s3_cpu_seconds']['median']:.1f}",
                f"{summary['other_cpu_seconds']['median']:.1f}",
                _mib(summary["main_peak_rss_bytes"]["max"]) if name == "drsentry-verify" else "-",
                summary.get("status", "-"),
            ]
        )
    return rows


VERIFY_HEADER = [
    "verify",
    "wall s, median (min-max)",
    "CPU s (tree)",
    "CPU s postgres",
    "CPU s moto",
    "CPU s others",
    "drsentry peak RSS",
    "result",
]


def cold_rows(document: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for name, handler in document.get("cold_start", {}).get("handlers", {}).items():
        medians = handler["median_seconds"]
        heaviest = handler["heaviest_imports_ms"]["bytecode"]
        top = ", ".join(f"{package} {ms:.0f}" for package, ms in list(heaviest.items())[:4])
        rows.append(
            [f"functions/{name}", f"{medians['bytecode'] * 1000:.0f}", f"{medians['source'] * 1000:.0f}", top]
        )
    return rows


COLD_HEADER = ["handler import", "ms, layer as built (.pyc)", "ms, without .pyc", "largest shares, ms"]


BACKUP_STEPS = (
    ("facts: count(*) per table", "row counts in the dump's snapshot (beside pg_dump)"),
    ("zstd write (compress, sha256, hand parts to upload)", "zstd + SHA-256 + handing parts to the upload"),
    ("stream other (waiting for pg_dump's output)", "waiting for pg_dump's output"),
    ("complete upload (last parts, CompleteMultipartUpload)", "last parts, CompleteMultipartUpload"),
    ("tags: SHA-256 and size (PutObjectTagging)", "tags: SHA-256 and size (PutObjectTagging)"),
    ("upload_part (summed over threads)", "(upload_part, summed over the 2 upload threads)"),
)
VERIFY_STEPS = (
    ("zstd decompress", "zstd decompress"),
    ("download (waiting for S3)", "waiting for the download"),
    ("feed pg_restore (blocked while it works)", "feeding pg_restore (blocked while it works)"),
    ("pg_restore after the last byte (indexes, constraints)", "pg_restore after the last byte (indexes)"),
    ("check: count(*) per table", "row counts of the restored database"),
    ("scratch: drop database", "dropping the scratch database"),
)


def phase_rows(document: dict[str, Any]) -> list[list[str]]:
    """One instrumented run each (phases.py): where the wall time of backup and verify goes."""
    rows: list[list[str]] = []
    for key, capability, steps, total in (
        ("backup_phases", "backup", BACKUP_STEPS, "total (run_scheduled_backup)"),
        ("verify_phases", "verify", VERIFY_STEPS, "total (run_scheduled_verify)"),
    ):
        phases = document.get(key)
        if not phases or "steps" not in phases:
            continue
        timings = phases["steps"]
        startup = phases["interpreter_start_seconds"] + phases["imports_seconds"]
        rows.append([capability, "interpreter start, imports, config and clients",
                     f"{startup + phases['config_and_clients_seconds']:.2f}"])  # fmt: skip
        rows += [
            [capability, label, f"{timings[step]['seconds']:.2f}"] for step, label in steps if step in timings
        ]
        if total in timings:
            rows.append([capability, "the whole run after start-up", f"{timings[total]['seconds']:.2f}"])
    return rows


PHASE_HEADER = ["run", "step (one instrumented run)", "seconds"]


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def target_rows(document: dict[str, Any]) -> list[list[str]]:
    return [[row["target"], row["measured"], row["limit"], row["status"]] for row in document["targets"]]


TARGET_HEADER = ["target", "measured", "limit", "result"]


def _context(document: dict[str, Any]) -> list[str]:
    machine = document["machine"]
    load = document["load_average"]
    versions = document.get("versions", {})
    default = document.get("databases", {}).get("default", {})
    small = document.get("databases", {}).get("small")
    lines = [
        f"Measured {document['measured_at']} on {machine['cpus']} cores ({machine['cpu_model']}), "
        f"{machine['memory_bytes'] / 2**30:.0f} GiB, {machine['platform']}; load average (1 min) "
        f"{load['start'][0]:.2f} at the start, {load['measured_max']:.2f} at most during the measurements, "
        f"{load['end'][0]:.2f} at the end."
    ]
    if "size_bytes" in default:
        lines.append(
            f"Database: pgbench scale {default['pgbench_scale']} plus "
            f"{default['event_rows']:,} `events` rows, "
            f"{default['size_bytes'] / 1e9:.2f} GB on disk (BENCH_SCALE={default['scale']:g})"
            + (f"; small: {small['size_bytes'] / 1e9:.2f} GB." if small else ".")
        )
    if "postgresql" in versions:
        lines.append(
            f"Each contender {document['repeat']} times, alternating; median (min-max). "
            f"PostgreSQL {versions['postgresql']}, pg_dump {versions['pg_dump']}, "
            f"Python {versions['python']}, "
            f"zstandard {versions['zstandard']}, boto3 {versions['boto3']}, moto {versions['moto']}; "
            "S3 is moto's server on the same machine."
            + (
                f" drsentry compresses with zstd level {document['compression_level']} "
                "(storage.compression_level)."
                if document.get("compression_level")
                else ""
            )
        )
    return lines


def text(document: dict[str, Any]) -> str:
    parts = [
        *_context(document),
        "",
        _text_table(CONTENDER_HEADER, contender_rows(document)),
        "",
        _text_table(VERIFY_HEADER, verify_rows(document)),
        "",
        _text_table(PHASE_HEADER, phase_rows(document)),
        "",
        _text_table(COLD_HEADER, cold_rows(document)),
    ]
    layer = document.get("cold_start", {}).get("layer")
    if layer:
        parts.append(
            f"shared layer: {layer['unzipped_bytes'] / MiB:.0f} MiB unzipped, "
            f"{layer['zipped_bytes'] / MiB:.0f} MiB zipped (without .pyc: "
            f"{layer['unzipped_bytes_without_pyc'] / MiB:.0f} / "
            f"{layer['zipped_bytes_without_pyc'] / MiB:.0f} MiB)"
        )
    parts += ["", _text_table(TARGET_HEADER, target_rows(document))]
    return "\n".join(parts)


NOTES = (
    "backup: `drsentry run backup` runs as a user runs it (a new process: interpreter start and imports "
    "count), with the local stack's configuration minus the replica copy (the seeds had none); stored "
    "size from the catalog record.",
    "seeds: plain `pg_dump DSN | gzip > file` (gzip -6), then boto3's `upload_file` (default transfer "
    "settings) to the same endpoint. floor: `pg_dump -Fc -Z0 > /dev/null`, no compression, no upload.",
    "verify floor: `pg_restore` with verify's options, of the same backup's archive decompressed to a file "
    "beforehand, into an empty database, with the server's default settings (drsentry's own restore "
    "session sets maintenance_work_mem=256MB, and synchronous_commit=off for the scratch database); "
    "creating and dropping that database is not timed.",
    'S3 is moto\'s server on the same 2 cores: its CPU ("CPU s moto") competes with the dump here and is '
    'off the machine in AWS. "CPU s others": what the machine spent on anything else meanwhile (other '
    "users, the kernel writing dirty pages back, the probe's own sampling), the noise gauge; before each "
    "sample the bench waits until the rest of the machine uses under 0.3 of a core. The load average "
    "includes the bench's own processes.",
    "cold import: a fresh `python -S` importing `functions/<name>/app.py` with a Lambda environment "
    "(X-Ray tracing on), from the layer as layers/drsentry/Makefile builds it (unchecked-hash .pyc). "
    '"without .pyc": what SAM\'s default Python build would ship (aws-lambda-builders unpacks wheels '
    "without compiling, /opt is read-only, so every cold start would compile what it imports).",
    "replication check: the hourly run with every record already `ok`; the first run after a bulk import "
    "also writes every record's state.",
)


def markdown(document: dict[str, Any], result_path: str) -> str:
    layer = document.get("cold_start", {}).get("layer")
    parts = [
        "# Benchmark results",
        "",
        f"`make bench` (`infra/bench/run.py`); the full result, every sample included, is `{result_path}`.",
        "",
        *(line + "  " for line in _context(document)),
        "",
        "## Targets",
        "",
        _markdown_table(TARGET_HEADER, target_rows(document)),
        "",
        "## Backup",
        "",
        _markdown_table(CONTENDER_HEADER, contender_rows(document)),
        "",
        "## Verify",
        "",
        _markdown_table(VERIFY_HEADER, verify_rows(document)),
        "",
        "## Where the time goes",
        "",
        _markdown_table(PHASE_HEADER, phase_rows(document)),
        "",
        "## Cold start",
        "",
        _markdown_table(COLD_HEADER, cold_rows(document)),
        "",
    ]
    if layer:
        parts += [
            f"Shared layer (built by `layers/drsentry/Makefile`, with .pyc): "
            f"{layer['unzipped_bytes'] / MiB:.0f} MiB unzipped, "
            f"{layer['zipped_bytes'] / MiB:.0f} MiB zipped; "
            f"without .pyc {layer['unzipped_bytes_without_pyc'] / MiB:.0f} MiB / "
            f"{layer['zipped_bytes_without_pyc'] / MiB:.0f} MiB. Largest: "
            + ", ".join(
                f"{name} {size / MiB:.0f} MiB"
                for name, size in list(layer["largest_packages_bytes"].items())[:5]
            )
            + ".",
            "",
        ]
    parts += ["## How it was measured", "", *(f"- {note}" for note in NOTES), ""]
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("result", type=Path)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    document = json.loads(args.result.read_text())
    document["targets"] = evaluate(document)
    print(markdown(document, str(args.result)) if args.markdown else text(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
