"""`drsentry local up|env|down`: the local stack (embedded PostgreSQL, moto, a Slack sink)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.markup import escape

from drsentry.operator.cli.app import JsonOption, cli_errors, local_app, print_json, stdout


def _state_dir() -> Path:
    # The checkout's own stack (.drsentry/local at its root) unless DRSENTRY_LOCAL_DIR says otherwise.
    from drsentry.local.stack import default_state_dir

    return default_state_dir()


@local_app.command("up")
@cli_errors
def local_up(as_json: JsonOption = False) -> None:
    """Start the embedded PostgreSQL, moto's server and a Slack sink; write drsentry.yaml.

    Example: drsentry local up --json
    """
    from drsentry.local import stack

    state_dir = _state_dir()
    document = stack.up(state_dir)
    if as_json:
        print_json(document)
        return
    stdout.print(f"[green]local stack is up[/] (state in {escape(str(state_dir))})", highlight=False)
    for name, value in document.items():
        stdout.print(f"  {name}: {escape(value)}", highlight=False)
    stdout.print('next: eval "$(drsentry local env)"')


@local_app.command("env")
@cli_errors
def local_env() -> None:
    """Print export lines that point boto3 and drsentry at the local stack.

    Example: eval "$(drsentry local env)"
    """
    from drsentry.local import stack

    sys.stdout.write("\n".join(stack.env_lines(_state_dir())) + "\n")


@local_app.command("down")
@cli_errors
def local_down() -> None:
    """Stop only what `drsentry local up` started here, and forget its databases and Slack posts.

    Example: drsentry local down
    """
    from drsentry.local import stack

    state_dir = _state_dir()
    stopped = stack.down(state_dir)
    where = escape(str(state_dir))
    stdout.print(
        f"stopped: {', '.join(stopped)} ({where}); its databases and Slack posts were removed"
        if stopped
        else f"nothing was running in {where}",
        highlight=False,
    )
