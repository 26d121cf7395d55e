"""Benchmark: peak RSS of the Fargate task's entry point, backup then verify, at two scales.

The claim under test: a task's memory does not grow with the database (everything streams), so
the entry process's peak RSS at 4x the data is within ``report.PEAK_RSS_GROWTH`` (10%) of the
peak at 1x. Not a test: it starts the benchmark's own local stack
(``DRSENTRY_LOCAL_DIR=infra/bench/work/stack``), builds or reuses the benchmark databases of
both scales (``benchdb.py``), puts a config with them as targets into the stack's SSM parameter,
and runs the image's ENTRYPOINT (``python -m drsentry.jobs.fargate.task JOB --target NAME``, read
from infra/Dockerfile) as its own process, with the environment the task definitions in
template.yaml give the container (parsed from the template, as tests/e2e/test_fargate_task.py
does) plus what ECS and the image add: credentials, the local endpoint, PATH with PostgreSQL's
tools, PYTHONPATH. Each run gets its own ``DRSENTRY_RUN_ID``, as each execution of the state
machine does.

Measured per run with ``probe.run``: the entry process's own peak RSS (``VmHWM``, the kernel's
high-water mark, so sampling cannot miss the peak) and, separately, each child's (pg_dump,
pg_restore, and the throwaway server's postgres, initdb when verify starts one). The judgement
is on the entry process only: the children are PostgreSQL's own tools, not drsentry's code.
A child named ``python`` with no CPU, seen in some runs, is the entry process forked for a
subprocess and sampled before its exec: its RSS is pages it still shares with its parent.

    BENCH_SCALE=4 .venv/bin/python infra/bench/task_memory.py   # scales 1 and 4 (the issue's)
    .venv/bin/python infra/bench/task_memory.py --scales 0.25,1 [--verify-into scratch]

Writes ``infra/bench/results/task-memory-<timestamp>.json`` (every sample, the load average
before and after each, the machine) and prints the summary as JSON on stdout. Exit 0 when every
run succeeded (a growth over the limit is a finding, printed as MISS, not an error).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import benchdb
import boto3
import probe
import report
import yaml
from cfnlint.decode import decode
from run import REPO, RESULTS, Bench, local_stack, log, machine

from drsentry.core.config import dump_config, parse_config
from drsentry.local import stack

warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")

DOCKERFILE = REPO / "infra" / "Dockerfile"
TEMPLATE = REPO / "template.yaml"
# The stack's config parameter is the template's default name; a separate one keeps the local
# stack's own configuration (the `app` target) untouched.
CONFIG_PARAMETER = "/drsentry/bench-task-memory/config"
TASK_DEFINITIONS = {"backup": "BackupTaskDefinition", "verify": "VerifyTaskDefinition"}
VERIFY_INTO = ("throwaway", "scratch")
FORKED_CHILD_NOTE = (
    "'python': the entry process forked for a subprocess, sampled before its exec "
    "(pages shared with the parent, no CPU of its own)"
)


def entry_point() -> list[str]:
    """The image's ENTRYPOINT, with this interpreter for `python`."""
    match = re.search(r"^ENTRYPOINT (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no ENTRYPOINT [...] line in {DOCKERFILE}")
    command: list[str] = json.loads(match.group(1))
    if command[0] != "python":
        raise SystemExit(f"the ENTRYPOINT does not start with python: {command}")
    return [sys.executable, *command[1:]]


def task_environment(job: str) -> dict[str, str]:
    """The container's environment in the job's task definition, CloudFormation's references resolved."""
    template, matches = decode(str(TEMPLATE))
    if matches:
        raise SystemExit(f"template.yaml does not parse: {matches[0]}")
    resources = json.loads(json.dumps(template))["Resources"]
    (container,) = resources[TASK_DEFINITIONS[job]]["Properties"]["ContainerDefinitions"]
    references = {"ConfigParameterName": CONFIG_PARAMETER, "AWS::Region": stack.REGION}
    environment = {}
    for variable in container["Environment"]:
        value = variable["Value"]
        environment[variable["Name"]] = references[value["Ref"]] if isinstance(value, dict) else value
    return environment


def given_by_ecs_and_the_image(endpoint: str, bin_dir: Path) -> dict[str, str]:
    """What reaches the container besides the task definition's environment (see the docstring)."""
    return {
        "AWS_ACCESS_KEY_ID": stack.TEST_CREDENTIAL,
        "AWS_SECRET_ACCESS_KEY": stack.TEST_CREDENTIAL,
        "AWS_SESSION_TOKEN": stack.TEST_CREDENTIAL,
        "AWS_ENDPOINT_URL": endpoint,
        "PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin",
        "PYTHONPATH": str(REPO / "layers" / "drsentry"),
        "HOME": os.environ.get("HOME", "/tmp"),
    }


def config_text(bench: Bench, databases: list[benchdb.BenchDatabase], verify_into: str) -> str:
    """The local stack's storage, catalog and notifications with the benchmark databases as targets.

    No replica or archive copy: they are separate server-side copies, not the task's memory.
    """
    local = stack.config_document()
    storage = {key: value for key, value in local["storage"].items() if key not in {"replica", "archive"}}
    verify: dict[str, Any] = {"critical_tables": ["pgbench_accounts", "events"], "min_size": "1MB"}
    if verify_into == "scratch":
        verify["scratch_dsn"] = bench.admin_dsn
    document = {
        "rpo": "1h",
        "rto": "1h",
        "storage": storage,
        "catalog": local["catalog"],
        "notifications": local["notifications"],
        "targets": [{"name": db.name, "dsn": db.dsn, "verify": verify} for db in databases],
    }
    # Parsed first, so that a bad config stops here with its one-line error, not inside a task.
    return dump_config(parse_config(yaml.safe_dump(document, sort_keys=False), source="task_memory"))


def run_task(
    bench: Bench, job: str, database: benchdb.BenchDatabase, base_env: dict[str, str]
) -> probe.Sample:
    run_id = secrets.token_hex(16)
    env = {
        **base_env,
        **task_environment(job),
        "DRSENTRY_RUN_ID": run_id,
        "DRSENTRY_RUNNER_REASON": "benchmark: infra/bench/task_memory.py",
    }
    load_before = os.getloadavg()
    sample = bench.measure(f"task-{job}", [*entry_point(), job, "--target", database.name], env)
    sample.extra.update(
        scale=database.scale,
        database=database.name,
        run_id=run_id,
        load_average_before=[round(value, 2) for value in load_before],
        load_average_after=[round(value, 2) for value in os.getloadavg()],
    )
    try:
        result = json.loads(sample.stdout.strip().splitlines()[-1])
        [record] = result["backups" if job == "backup" else "verifications"]
    except (json.JSONDecodeError, KeyError, IndexError, ValueError):
        sample.extra["error"] = sample.stderr.strip()[-1000:]
        sample.returncode = sample.returncode or 1
        log(f"task {job} of {database.name} FAILED ({sample.returncode}): {sample.stderr.strip()[-500:]}")
        return sample
    sample.extra.update(backup_id=record.get("backup_id"), status=record.get("status"))
    if job == "backup":
        sample.extra.update(stored_bytes=record.get("size_bytes"), key=record.get("key"))
    else:
        sample.extra.update(restore_seconds=record.get("restore_seconds"))
    if sample.returncode != 0:
        sample.extra["error"] = record.get("error") or record.get("error_details") or sample.stderr[-1000:]
    log(
        f"task {job} of {database.name}: exit {sample.returncode}, {sample.wall_seconds:.1f}s, "
        f"entry process peak RSS {sample.main_peak_rss_bytes / 2**20:.0f} MiB, "
        f"children {json.dumps(sample.children)}"
    )
    return sample


def storage_prefix(text: str) -> str:
    return parse_config(text).storage.prefix


def delete_backups(bench: Bench, prefix: str) -> None:
    """Every version under the target's prefix; the bucket locks backups in GOVERNANCE mode."""
    pages = bench.s3.get_paginator("list_object_versions").paginate(Bucket=bench.bucket, Prefix=prefix)
    for page in pages:
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            bench.s3.delete_object(
                Bucket=bench.bucket,
                Key=entry["Key"],
                VersionId=entry["VersionId"],
                BypassGovernanceRetention=True,
            )


def judge(samples: list[dict[str, Any]], scales: list[float]) -> dict[str, Any]:
    """Growth of the entry process's peak RSS from the smaller scale to the larger, per job."""
    small, large = scales
    judged: dict[str, Any] = {}
    for job in TASK_DEFINITIONS:
        mine = [s for s in samples if s["contender"] == f"task-{job}"]
        peaks = {
            scale: max(
                (s["main_peak_rss_bytes"] for s in mine if s["scale"] == scale),
                default=0,
            )
            for scale in scales
        }
        growth = peaks[large] / peaks[small] - 1 if peaks[small] else None
        judged[job] = {
            "peak_rss_bytes": {f"{scale:g}": peak for scale, peak in peaks.items()},
            "growth": None if growth is None else round(growth, 4),
            "limit": report.PEAK_RSS_GROWTH,
            "result": "PASS" if growth is not None and growth < report.PEAK_RSS_GROWTH else "MISS",
        }
    return judged


def children_peaks(samples: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per run (job at scale), each child process's peak RSS: PostgreSQL's tools, reported apart."""
    return {
        f"{s['contender']} @ {s['scale']:g}": {
            name: int(child["peak_rss_bytes"]) for name, child in sorted(s["children"].items())
        }
        for s in samples
    }


def measure(scales: list[float], verify_into: str, quiet_cores: float) -> dict[str, Any]:
    started_at = datetime.now(UTC)
    began = time.perf_counter()
    document: dict[str, Any] = {
        "benchmark": "task-memory",
        "measured_at": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "scales": scales,
        "verify_into": verify_into,
        "command": [*entry_point(), "JOB", "--target", "NAME"],
        "machine": machine(),
        "python": platform.python_version(),
        "load_average": {"start": [round(value, 2) for value in os.getloadavg()]},
    }
    samples: list[dict[str, Any]] = []
    with local_stack() as stack_document:
        bench = Bench(stack_document, repeat=1, quiet_cores=quiet_cores)
        databases = [benchdb.ensure(bench.admin_dsn, bench.bin_dir, scale) for scale in scales]
        document["databases"] = [database.describe() for database in databases]
        ssm = boto3.client("ssm", endpoint_url=stack_document["aws_endpoint_url"], region_name=stack.REGION)
        text = config_text(bench, databases, verify_into)
        ssm.put_parameter(Name=CONFIG_PARAMETER, Value=text, Type="String", Overwrite=True)
        base_env = given_by_ecs_and_the_image(stack_document["aws_endpoint_url"], bench.bin_dir)
        for database in databases:
            gigabytes = database.size_bytes / 1e9
            log(f"{database.name} ({gigabytes:.2f} GB): backup, then verify, as Fargate tasks")
            backup = run_task(bench, "backup", database, base_env)
            samples.append(backup.as_json())
            if backup.returncode == 0:
                samples.append(run_task(bench, "verify", database, base_env).as_json())
            # moto holds every object in memory: the dump goes once it has been verified.
            delete_backups(bench, f"{storage_prefix(text)}{database.name}/")
    document["samples"] = samples
    document["children_peak_rss_bytes"] = children_peaks(samples)
    document["children_note"] = FORKED_CHILD_NOTE
    document["judged"] = judge(samples, scales)
    document["load_average"]["end"] = [round(value, 2) for value in os.getloadavg()]
    document["load_average"]["per_sample"] = [s["load_average_1m"] for s in samples]
    document["duration_seconds"] = round(time.perf_counter() - began, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"task-memory-{started_at:%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    document["result_file"] = str(path.relative_to(REPO))
    log(f"written to {document['result_file']}")
    return document


def default_scales() -> list[float]:
    """BENCH_SCALE and a quarter of it: the issue's comparison is scale 4 against scale 1."""
    scale = float(os.environ.get("BENCH_SCALE", "4"))
    return [scale / 4, scale]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", help="SMALL,LARGE (default: BENCH_SCALE/4,BENCH_SCALE; BENCH_SCALE 4)")
    parser.add_argument(
        "--verify-into",
        choices=VERIFY_INTO,
        default="throwaway",
        help="throwaway: the config's default, a blank server per run; scratch: the stack's server",
    )
    parser.add_argument(
        "--quiet-cores",
        type=float,
        default=0.3,
        help="before each run, wait until others use less CPU than this (0: off)",
    )
    arguments = parser.parse_args()
    scales = [float(value) for value in arguments.scales.split(",")] if arguments.scales else default_scales()
    if len(scales) != 2 or not 0 < scales[0] < scales[1]:
        parser.error("--scales takes two positive scales, the smaller first")
    document = measure(scales, arguments.verify_into, arguments.quiet_cores)
    shown = ("scales", "verify_into", "judged", "children_peak_rss_bytes", "load_average", "result_file")
    summary = {key: document[key] for key in shown}
    summary["databases"] = {d["name"]: d["size_bytes"] for d in document["databases"]}
    print(json.dumps(summary, indent=2))
    return 1 if any(s["returncode"] != 0 for s in document["samples"]) else 0


if __name__ == "__main__":
    sys.exit(main())
