"""Running one contender and measuring it: wall time, CPU, peak RSS per process, load.

CPU of the whole process tree comes from ``getrusage(RUSAGE_CHILDREN)`` deltas (exact,
every waited-for descendant included). The tree is sampled every 20 ms with psutil: each
process's ``VmHWM`` (the kernel's own peak-RSS high-water mark, so sampling cannot miss a
peak) and the CPU of the children it has reaped, which splits the total between the
main process (drsentry's Python) and its children (pg_dump). The embedded PostgreSQL
server and the moto server are measured as CPU deltas of their process trees.
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

SAMPLE_SECONDS = 0.02


@dataclass
class Sample:
    """One measured run of one contender."""

    contender: str
    wall_seconds: float
    cpu_seconds: float  # the whole tree the command started
    main_cpu_seconds: float  # the command's own process
    main_peak_rss_bytes: int
    children: dict[str, dict[str, float]] = field(default_factory=dict)  # name: cpu_seconds, peak_rss_bytes
    server_cpu_seconds: float = 0.0  # the PostgreSQL server's processes
    s3_cpu_seconds: float = 0.0  # the moto server
    # CPU the machine spent on anything else meanwhile (other users' work): the noise gauge.
    other_cpu_seconds: float = 0.0
    load_average_1m: float = 0.0
    returncode: int = 0
    stdout: str = ""
    stderr: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        document = {
            "contender": self.contender,
            "wall_seconds": round(self.wall_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "main_cpu_seconds": round(self.main_cpu_seconds, 3),
            "main_peak_rss_bytes": self.main_peak_rss_bytes,
            "children": self.children,
            "server_cpu_seconds": round(self.server_cpu_seconds, 3),
            "s3_cpu_seconds": round(self.s3_cpu_seconds, 3),
            "other_cpu_seconds": round(self.other_cpu_seconds, 3),
            "load_average_1m": round(self.load_average_1m, 2),
            "returncode": self.returncode,
        }
        document.update(self.extra)
        return document


def tree_cpu_seconds(pid: int | None) -> float:
    """CPU used so far by a long-running server and every descendant, live or reaped."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def _peak_rss(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def _children_cpu(pid: int) -> float | None:
    """CPU of the children `pid` has reaped (fields cutime, cstime of /proc/pid/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[13]) + int(fields[14])) / ticks


def machine_busy_seconds() -> float:
    """CPU time all cores of the machine have spent busy so far (not idle, not waiting for I/O)."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def wait_until_quiet(max_cores: float, window_seconds: float = 3.0, max_wait_seconds: float = 900.0) -> float:
    """Wait until the machine, with nothing of ours running, uses less than `max_cores` of CPU
    over `window_seconds` (other users' test suites share it); returns the seconds waited.
    Gives up after `max_wait_seconds`: the sample's `other_cpu_seconds` still shows the noise."""
    began = time.monotonic()
    while True:
        before = machine_busy_seconds()
        time.sleep(window_seconds)
        cores = (machine_busy_seconds() - before) / window_seconds
        waited = time.monotonic() - began
        if cores < max_cores or waited >= max_wait_seconds:
            return waited - window_seconds


def _rusage_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(
    contender: str,
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    server_pid: int | None = None,
    s3_pid: int | None = None,
    stdout_to_devnull: bool = False,
) -> Sample:
    """Run `argv` to its end and measure it; stdout and stderr are kept (unless sent to /dev/null)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        server_before = tree_cpu_seconds(server_pid)
        s3_before = tree_cpu_seconds(s3_pid)
        cpu_before = _rusage_cpu()
        busy_before = machine_busy_seconds()
        started = time.perf_counter()
        process = subprocess.Popen(
            list(argv), env=env, stdout=subprocess.DEVNULL if stdout_to_devnull else out, stderr=err
        )
        main_peak = 0
        main_children_cpu = 0.0
        children: dict[int, dict[str, Any]] = {}
        try:
            main = psutil.Process(process.pid)
        except psutil.NoSuchProcess:
            main = None
        while process.poll() is None:
            main_peak = max(main_peak, _peak_rss(process.pid) or 0)
            main_children_cpu = max(main_children_cpu, _children_cpu(process.pid) or 0.0)
            try:
                descendants = main.children(recursive=True) if main is not None else []
            except psutil.NoSuchProcess:
                descendants = []
            for child in descendants:
                seen = children.setdefault(child.pid, {"name": "", "cpu": 0.0, "peak": 0})
                try:
                    seen["name"] = seen["name"] or child.name()
                    times = child.cpu_times()
                    seen["cpu"] = max(seen["cpu"], times.user + times.system)
                except psutil.NoSuchProcess:
                    continue
                seen["peak"] = max(seen["peak"], _peak_rss(child.pid) or 0)
            time.sleep(SAMPLE_SECONDS)
        wall = time.perf_counter() - started
        busy = machine_busy_seconds() - busy_before
        cpu = _rusage_cpu() - cpu_before
        load = os.getloadavg()[0]
        server_cpu = tree_cpu_seconds(server_pid) - server_before
        s3_cpu = tree_cpu_seconds(s3_pid) - s3_before
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", errors="replace")
        stderr = err.read().decode("utf-8", errors="replace")
    by_name: dict[str, dict[str, float]] = {}
    for seen in children.values():
        if seen["cpu"] < 0.01 and seen["peak"] < 16 * 1024 * 1024:
            continue  # `pg_dump --version` and the like
        entry = by_name.setdefault(seen["name"], {"cpu_seconds": 0.0, "peak_rss_bytes": 0})
        entry["cpu_seconds"] = round(entry["cpu_seconds"] + seen["cpu"], 3)
        entry["peak_rss_bytes"] = max(entry["peak_rss_bytes"], seen["peak"])
    return Sample(
        contender=contender,
        wall_seconds=wall,
        cpu_seconds=cpu,
        # The main process's own CPU: the tree's total less what its reaped children used.
        main_cpu_seconds=max(cpu - main_children_cpu, 0.0),
        main_peak_rss_bytes=main_peak,
        children=by_name,
        server_cpu_seconds=server_cpu,
        s3_cpu_seconds=s3_cpu,
        # The probe's own sampling (a few % of a core) counts here too.
        other_cpu_seconds=max(busy - cpu - server_cpu - s3_cpu, 0.0),
        load_average_1m=load,
        returncode=process.returncode,
        stdout=stdout,
        stderr=stderr,
    )
