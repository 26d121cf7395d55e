"""Benchmark: ten small targets backed up by one `drsentry run backup`, at once vs one after another.

Not a test: it starts its own local stack (``DRSENTRY_LOCAL_DIR=infra/bench/work/parallel``),
creates ten sample databases (the demo's schema, a few MB each) and a config of ten targets,
then runs the real CLI, alternating, ``--repeat`` times each:

- ``sequential``: ``drsentry run backup --max-parallel 1``;
- ``parallel-N``: ``drsentry run backup --max-parallel N`` for each N of ``--parallel``.

For each run: the wall time, and the CPU-seconds of the CLI and its pg_dumps (getrusage of
the waited child) beside the CPU-seconds the whole machine spent (psutil), which include the
local PostgreSQL and moto servers. On AWS each target is its own invocation; here the cores
bound the speed-up, which the CPU-seconds against the wall time show.

Writes ``infra/bench/results/parallel-<timestamp>.json`` and prints the medians and the ratio.

    .venv/bin/python infra/bench/parallel_targets.py [--repeat 3] [--parallel 4,10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

from drsentry.local import stack
from drsentry.local.sample import create_sample_database

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
STATE_DIR = BENCH / "work" / "parallel"
TARGETS = 10
COMMAND = [sys.executable, "-c", "from drsentry.operator.cli import main; main()"]


def log(message: str) -> None:
    print(f"[parallel] {message}", file=sys.stderr, flush=True)


def ten_target_config(document: dict[str, str]) -> Path:
    """The local stack's config with ten targets, each its own sample database."""
    raw = yaml.safe_load(Path(document["config"]).read_text())
    first = raw["targets"][0]
    targets = []
    for number in range(TARGETS):
        name = f"bench_parallel_{number}"
        dsn = create_sample_database(document["pg_dsn"], name, replace=True)
        own = {key: value for key, value in first.items() if key not in ("dsn", "dsn_secret")}
        targets.append({**own, "name": f"t{number}", "dsn": dsn})
    raw["targets"] = targets
    path = STATE_DIR / "ten-targets.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def one_run(config: Path, max_parallel: int) -> dict[str, Any]:
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_machine = psutil.cpu_times()
    started = time.perf_counter()
    run = subprocess.run(
        [*COMMAND, "run", "backup", "--config", str(config), "--json", "--max-parallel", str(max_parallel)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    after_machine = psutil.cpu_times()
    if run.returncode != 0:
        raise SystemExit(f"drsentry run backup failed ({run.returncode}): {run.stderr.strip()[-500:]}")
    backups = json.loads(run.stdout)["backups"]
    completed = sum(1 for backup in backups if backup["status"] == "completed")
    cli_cpu = (after_children.ru_utime - before_children.ru_utime) + (
        after_children.ru_stime - before_children.ru_stime
    )
    busy = ("user", "system", "nice", "irq", "softirq")
    machine_cpu = sum(getattr(after_machine, f) - getattr(before_machine, f) for f in busy)
    return {
        "max_parallel": max_parallel,
        "wall_seconds": round(wall, 3),
        "cli_cpu_seconds": round(cli_cpu, 3),
        "machine_cpu_seconds": round(machine_cpu, 3),
        "completed": completed,
        "bytes": sum(backup.get("size_bytes") or 0 for backup in backups),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parallel", default="4,10", help="comma-separated --max-parallel values")
    arguments = parser.parse_args()
    widths = [int(value) for value in arguments.parallel.split(",")]

    os.environ["DRSENTRY_LOCAL_DIR"] = str(STATE_DIR)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    document = stack.up(STATE_DIR)
    try:
        config = ten_target_config(document)
        log("warm-up run (imports, connections, first bucket writes)")
        one_run(config, 1)
        samples: list[dict[str, Any]] = []
        for round_number in range(arguments.repeat):
            order = [1, *widths] if round_number % 2 == 0 else [*widths, 1]
            for width in order:
                sample = one_run(config, width)
                log(f"round {round_number + 1}: --max-parallel {width}: {sample}")
                samples.append(sample)
    finally:
        stack.down(STATE_DIR)

    summary: dict[str, Any] = {}
    for width in [1, *widths]:
        mine = [s for s in samples if s["max_parallel"] == width]
        summary[str(width)] = {
            "wall_seconds_median": statistics.median(s["wall_seconds"] for s in mine),
            "wall_seconds_spread": [
                min(s["wall_seconds"] for s in mine),
                max(s["wall_seconds"] for s in mine),
            ],
            "cli_cpu_seconds_median": statistics.median(s["cli_cpu_seconds"] for s in mine),
            "machine_cpu_seconds_median": statistics.median(s["machine_cpu_seconds"] for s in mine),
        }
    sequential = summary["1"]["wall_seconds_median"]
    for width in widths:
        summary[str(width)]["ratio_to_sequential"] = round(
            summary[str(width)]["wall_seconds_median"] / sequential, 3
        )
    result = {
        "benchmark": "parallel targets",
        "targets": TARGETS,
        "goal": "at once <= 0.6 x one after another",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()},
        "summary": summary,
        "samples": samples,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"parallel-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
